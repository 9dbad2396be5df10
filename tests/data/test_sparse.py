"""medseg.data.sparse and sparse labels: a "not annotated" value (255, declared as the label
"ignore" in dataset.json) that survives reading and resampling and counts in no loss, no patch
choice and no metric.

Real data: MSD Hippocampus labels with 80 % of the axial slices (SimpleITK array axis 0, z)
set to 255 (`medseg.data.sparse.write_sparse_msd`). The reported Dice comes from
`python -m benchmarks run accuracy --sets hippocampus --sparse-every 5` (BENCHMARKS.md).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg
from helpers import HIPPOCAMPUS_CASES, real_dataset
from medseg.planning import compute_fingerprint
from medseg.data.preprocess import resize_label
from medseg.data.sampler import PatchSampler, foreground_points
from medseg.data.augment import AugmentConfig
from medseg.data.sparse import sparsify_slices, write_sparse_msd
from medseg.io.labels import IGNORE_INDEX, LabelMapping, infer_label_mapping
from medseg.io.layout import describe_dataset
from medseg.training.loss_registry import LOSSES, make_loss
from medseg.training.deep_supervision import DeepSupervisionLoss
from medseg.evaluation.metrics import case_metrics

TINY3D = dict(features=(8, 16, 32), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=3,
              val_fraction=0.34)


@pytest.fixture(scope="module")
def sparse_hippo(tmp_path_factory):
    src = real_dataset("msd-hippocampus")
    return write_sparse_msd(src, tmp_path_factory.mktemp("sparse") / "data", HIPPOCAMPUS_CASES[:4])


def test_sparsify_keeps_one_axial_slice_in_five():
    label = np.random.default_rng(0).integers(0, 3, (35, 6, 5)).astype(np.uint8)
    sparse = sparsify_slices(label, keep_every=5, axis=0)
    kept = [z for z in range(35) if (sparse[z] != IGNORE_INDEX).all()]
    assert kept == list(range(2, 35, 5)) and (sparse[kept] == label[kept]).all()
    assert (sparse == IGNORE_INDEX).mean() == pytest.approx(28 / 35)


def test_dataset_json_ignore_label_is_no_class(sparse_hippo):
    pairs, info = describe_dataset(sparse_hippo)
    assert info.ignore_label == 255 and info.num_classes == 3
    assert info.class_names == ["background", "Anterior", "Posterior"]
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(pairs[0].label)))
    assert (raw == 255).mean() > 0.75
    classes = info.label_mapping().apply(raw)
    assert set(np.unique(classes)) <= {0, 1, 2, IGNORE_INDEX} and (classes == IGNORE_INDEX).sum() == (raw == 255).sum()
    fp, _, mapping = compute_fingerprint(sparse_hippo, progress=False)
    assert fp.num_classes == 3 and mapping.ignore == 255
    assert all(len(c.class_voxels) == 3 for c in fp.cases)
    first = next(c for c in fp.cases if c.case_id == pairs[0].case_id)
    assert first.class_voxels == [int((classes == k).sum()) for k in range(3)]  # 255s counted nowhere


def test_ignore_label_refused_when_it_is_a_class_or_not_highest(tmp_path):
    with pytest.raises(ValueError, match="also class 1"):
        LabelMapping("index", num_classes=3, ignore=1)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "ignore": 1, "tumour": 2},
        "file_ending": ".nii.gz"}))
    with pytest.raises(medseg.errors.MedsegInputError, match="highest value"):
        describe_dataset(tmp_path)


def test_inferred_mapping_leaves_the_ignore_value_out():
    masks = [("a.png", np.array([0, 255, 128, 255], np.uint8))]
    assert infer_label_mapping(masks).num_classes == 3           # 0/128/255 would be three levels
    mapping = infer_label_mapping(masks, ignore=128)
    assert mapping.num_classes == 2 and mapping.apply(np.array([0, 128, 255], np.uint8)).tolist() == [0, 255, 1]


def test_resampling_keeps_ignored_voxels_ignored():
    label = torch.zeros(20, 20, dtype=torch.uint8)
    label[:, 10:] = IGNORE_INDEX
    label[2:8, 2:8] = 1
    small = resize_label(label, (10, 10), num_classes=2)
    assert (small[:, 5:] == IGNORE_INDEX).all() and (small[:, :5] != IGNORE_INDEX).all()
    assert (small[1:4, 1:4] == 1).all()


def test_sampler_never_centres_on_ignored_voxels():
    label = torch.full((1, 40, 40), IGNORE_INDEX, dtype=torch.uint8)[0]
    label[20, 20] = 1
    points = foreground_points(label, torch.Generator().manual_seed(0))
    assert points.tolist() == [[20, 20]]
    sampler = PatchSampler([torch.randn(1, 40, 40)], [label], (8, 8), 4, AugmentConfig(enabled=False),
                           foreground_fraction=1.0)
    _, y = sampler.batch(torch.Generator().manual_seed(1))
    assert (y[:, 4, 4] == 1).all()  # every patch centred on the one labelled voxel


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_do_not_see_ignored_voxels(name):
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8), generator=gen)
    target[:, :, 4:] = IGNORE_INDEX
    logits = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
    weights = [0.2, 0.3, 0.5] if name == "weighted-dice" else None
    loss_fn = make_loss(name, 3, class_weights=weights, ignore_index=IGNORE_INDEX)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad[..., 4:].abs().max() == 0 and logits.grad[..., :4].abs().max() > 0
    changed = logits.detach().clone()
    changed[..., 4:] = torch.randn(2, 3, 8, 4, generator=gen) * 10
    assert float(loss_fn(changed, target)) == pytest.approx(float(loss.detach()), abs=1e-6)


def test_deep_supervision_keeps_the_ignore_value():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = IGNORE_INDEX
    outputs = [torch.randn(1, 2, 8, 8, requires_grad=True), torch.randn(1, 2, 4, 4, requires_grad=True)]
    DeepSupervisionLoss(make_loss("dice+ce", 2, ignore_index=IGNORE_INDEX))(outputs, target).backward()
    assert outputs[1].grad[..., 2:].abs().max() == 0 and outputs[1].grad[..., :2].abs().max() > 0


def test_metrics_leave_ignored_reference_voxels_out():
    ref = np.zeros((20, 20), np.uint8)
    ref[5:10, 5:10] = 1
    ref[:, 12:] = IGNORE_INDEX
    pred = np.where(ref == IGNORE_INDEX, 0, ref).astype(np.uint8)
    pred[3:17, 14:18] = 1  # a wrong blob, but only where nobody annotated
    scores = case_metrics(pred, ref, 2, ignore_index=IGNORE_INDEX)
    assert scores[1]["dice"] == 1.0 and scores[1]["hd95"] == 0.0 and scores[1]["lesion_f1"] == 1.0
    assert scores[1]["ref_volume"] == 25.0
    assert case_metrics(pred, np.where(ref == IGNORE_INDEX, 0, ref), 2)[1]["dice"] < 0.5  # it would count


def test_evaluate_with_sparse_references(sparse_hippo, tmp_path):
    src = real_dataset("msd-hippocampus")
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in HIPPOCAMPUS_CASES[:2]:
        full = sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz"))
        array = sitk.GetArrayFromImage(full)
        array[np.arange(array.shape[0]) % 5 != 2] = 1  # wrong, on the slices nobody annotated
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(full)
        sitk.WriteImage(out, str(pred / f"{case}.nii.gz"))
    result = medseg.evaluate(pred, sparse_hippo, cases=HIPPOCAMPUS_CASES[:2], ignore_label=255,
                             class_names=["background", "anterior", "posterior"])
    for k in (1, 2):
        assert result.summary[k]["dice"]["mean"] == 1.0
    assert result.settings["reference_mapping"]["ignore"] == 255


def test_training_on_sparse_hippocampus(sparse_hippo, tmp_path):
    run = medseg.train(sparse_hippo, tmp_path / "run", epochs=1, seed=0, **TINY3D)  # with finish: validation, report
    info = json.loads((run / "run.json").read_text())
    assert info["label_mapping"]["ignore"] == 255 and info["label_mapping"]["num_classes"] == 3
    assert "not annotated" in info["label_rule"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state["num_classes"] == 3  # the model predicts K classes, never the ignore value
    log = (run / "log.csv").read_text().splitlines()
    row = dict(zip(log[0].split(","), log[1].split(",")))
    assert np.isfinite(float(row["train_loss"])) and 0 <= float(row["val_dice_mean"]) <= 1
    spec = json.loads((run / "postprocessing.json").read_text())  # chosen on sparse validation labels
    assert "largest_component_classes" in spec
    assert (run / "report.html").is_file()
