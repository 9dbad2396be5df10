"""The other tools' sliding windows, run on medseg's own network object: MONAI and nnU-Net v2.

Both peers get the same trained network, patch, overlap and Gaussian weighting (sigma = patch/8)
as medseg. MONAI's `sliding_window_inference` is a medseg dependency; nnU-Net v2's
`nnUNetPredictor` is not, and is used only where `nnunetv2` is importable (`nnunet_available`):
its column is left out otherwise. nnU-Net needs a plans file and a dataset description; the
minimal ones its sliding window reads (patch size, label set) are built here, with no trained
model folder (`manual_initialization`).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

Infer = Callable[["torch.Tensor"], "torch.Tensor"]   # noqa: F821  (C, *spatial) normalised -> (K, *spatial) probs


def nnunet_available() -> bool:
    return importlib.util.find_spec("nnunetv2") is not None


def monai_inferer(model, patch: Sequence[int], overlap: float, sw_batch_size: int) -> Infer:
    """MONAI's sliding window (gaussian, sigma_scale 0.125) then softmax."""
    import torch
    from monai.inferers import sliding_window_inference

    @torch.inference_mode()
    def infer(image: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(image[None], roi_size=tuple(patch), sw_batch_size=sw_batch_size,
                                          predictor=model, overlap=overlap, mode="gaussian", sigma_scale=0.125,
                                          progress=False)
        return torch.softmax(logits[0].float(), dim=0)
    return infer


def nnunet_inferer(model, patch: Sequence[int], overlap: float, num_classes: int,
                   channel_names: Sequence[str]) -> Infer:
    """nnU-Net v2's `predict_sliding_window_return_logits` around the given network, then softmax."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dims, n = len(patch), len(channel_names)
    resampling = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    plans = {
        "dataset_name": "medseg_benchmark", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * dims,
        "original_median_shape_after_transp": [int(p) for p in patch],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(range(dims)),
        "transpose_backward": list(range(dims)),
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [int(p) for p in patch], "spacing": [1.0] * dims,
            "median_image_size_in_voxels": [int(p) for p in patch],
            "normalization_schemes": ["ZScoreNormalization"] * n, "use_mask_for_norm": [False] * n,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {**resampling, "order": 3},
            "resampling_fn_seg_kwargs": {**resampling, "is_seg": True},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": resampling,
            "architecture": {"network_class_name": "medseg.nets.unet.UNet", "arch_kwargs": {},
                             "_kw_requires_import": []},
            "batch_dice": False}},
        "experiment_planner_used": "none", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    dataset_json = {"channel_names": {str(i): c for i, c in enumerate(channel_names)},
                    "labels": {"background": 0, **{f"class{k}": k for k in range(1, num_classes)}},
                    "numTraining": 0, "file_ending": ".nii.gz"}
    manager = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=1 - overlap, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(model, manager, manager.get_configuration("3d_fullres"), None, dataset_json,
                                    "medseg", None)

    def infer(image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(predictor.predict_sliding_window_return_logits(image).float(), dim=0)
    return infer


class WindowCounter:
    """Counts the windows a network runs (a forward pre-hook; the network is not changed)."""

    def __init__(self, model):
        self.windows = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.windows += int(args[0].shape[0])
