"""`medseg predict`: an image or volume file, a DICOM series folder, or a folder of them in; one
mask per case (and an overlay) out, in the input's format and geometry.

Masks hold class indices 0..K-1, in the input's format: PNG for 2D pictures, NIfTI / NRRD / MHA
as the input, NIfTI (``.nii.gz``) for DICOM series unless another `output_format` is asked for.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm

from .. import distributed
from ..case import Case
from ..device import resolve_device
from ..errors import MedsegInputError
from ..evaluation.statistics import STATISTICS_CSV, STATISTICS_JSON, structure_statistics, write_statistics
from ..locks import output_lock
from ..manifest import check_output_folder, record_outputs
from ..io.dataset import read_image_channels
from ..io.layout import InputCase, prediction_inputs
from ..io.registry import MASK_WRITE_SUFFIXES, match_suffix, read_image_header
from ..io.dicom import read_dicom_series
from ..report.overlay import save_overlay
from .clinical import DICOM_OUTPUTS, check_dicom_output, write_prediction
from .predictor import Predictor
from .uncertainty_outputs import (UNCERTAINTY_CSV, UNCERTAINTY_DIR, UNCERTAINTY_JSON, uncertainty_row,
                                  write_case_maps, write_uncertainty_tables)

def read_input_case(item: InputCase, channels: int | None = None) -> Case:
    """Read a case to predict (its channel files, or its DICOM series) as an unlabelled Case."""
    if item.dicom:
        image, spacing, meta = read_dicom_series(item.source)
        if channels is not None and image.shape[0] != channels:
            raise MedsegInputError(item.source, f"a DICOM series has 1 channel but the model takes {channels}")
    else:
        image, spacing, meta = read_image_channels(item.files, item.case_id, channels, "the model takes")
    return Case(case_id=item.case_id, image=image, spacing=spacing, source=item.source, meta=meta)


def output_suffix(item: InputCase, output_format: str | None) -> str:
    """The mask file suffix for a case: asked-for format, else the input's where masks can be
    written in it (NIfTI, NRRD, MHA, PNG), else ``.nii.gz`` for volumes and ``.png`` for pictures."""
    if output_format in DICOM_OUTPUTS:  # dicom-seg, rtstruct: <case>_seg.dcm, <case>_rtstruct.dcm
        return DICOM_OUTPUTS[output_format]
    if output_format:
        suffix = output_format if output_format.startswith(".") else "." + output_format
        if suffix.lower() not in MASK_WRITE_SUFFIXES:
            raise ValueError(f"cannot write masks as {suffix} (supported: {', '.join(sorted(MASK_WRITE_SUFFIXES))})")
        return suffix.lower()
    if item.dicom:
        return ".nii.gz"
    suffix = match_suffix(item.source)
    if suffix in MASK_WRITE_SUFFIXES and suffix not in (".mhd", ".nhdr"):  # detached formats -> one file
        return suffix
    return ".png" if suffix in (".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".png") else ".nii.gz"


def check_input(item: InputCase, channels: int, spatial_dims: int) -> None:
    """Check a case to predict before anything is written: its headers (as many channels as the
    model takes; 2D for a 2D model, 3D for a 3D one), then its pixels (a file cut short after a
    good header, NaN). Raises `MedsegInputError`. Reading twice costs little next to the network."""
    if item.dicom:
        if spatial_dims != 3:
            raise MedsegInputError(item.source, f"is a DICOM series (a 3D volume) but the model segments "
                                   f"{spatial_dims}D images")
        read_input_case(item, channels)
        return
    total = 0
    for f in item.files:
        header = read_image_header(f)
        size = tuple(header["size"])
        if len(size) != spatial_dims:
            kind = {2: "a 2D image", 3: "a 3D volume"}.get(len(size), f"{len(size)}D")
            raise MedsegInputError(f, f"is {kind} ({'x'.join(map(str, size))}) but the model segments "
                                   f"{spatial_dims}D {'images' if spatial_dims == 2 else 'volumes'}")
        total += int(header.get("channels", 1))
    if total != channels:
        raise MedsegInputError(item.source, f"has {total} channel(s) but the model was trained on {channels}")
    read_input_case(item, channels)


class InputsSkipped(MedsegInputError):
    """`predict(keep_going=True)` did every case it could; these inputs failed (path, problem)."""

    def __init__(self, inputs: Path, failures: list[MedsegInputError], total: int) -> None:
        self.failures = failures
        listing = "".join(f"\n  {err}" for err in failures)
        super().__init__(inputs, f"{len(failures)} of {total} input(s) could not be predicted (the others' masks "
                         f"are written):{listing}")


def predict(run: str | os.PathLike, inputs: str | os.PathLike, out: str | os.PathLike, *,
            device: str = "auto", checkpoint: str = "best", overlap: float = 0.5, mirror: bool | str = "auto",
            overlays: bool = True, overwrite: bool = False, output_format: str | None = None,
            folds: list[int] | None = None, postprocess: bool = True, backend: str = "torch",
            skip_empty: bool = False, compile: bool | str = "auto", keep_going: bool = False,
            uncertainty: bool = False) -> list[Path]:
    """Segment an image or volume file, a DICOM series folder, or a folder of them; returns the
    written mask paths.

    Masks go to OUT/<case><suffix> (`output_suffix`), overlays to OUT/overlays/<case>.png (3D:
    three orthogonal slices through the predicted structure), and the size, pieces, box and
    intensities of every predicted structure to OUT/statistics.csv and .json
    (`medseg.evaluation.statistics`). OUT must be new or hold only what medseg wrote there (its
    record, OUT/medseg-outputs.json: `medseg.manifest`): a folder holding anything else, such as
    reference labels, is refused, `overwrite` included. Masks already there are replaced only with
    `overwrite`, and an input file is never written over in any case. `skip_empty=True`
    does not run the network on windows that hold nothing but background (`Predictor`).
    `compile`: "auto" switches the windows to `torch.compile` on a CPU once the windows still
    ahead (this case's, and as many for every case to come) would repay the compilation
    (`CompilingNetwork`); True compiles at once; False never.

    Every input is checked from its headers (`check_input`) before the first mask is written,
    and OUT is held exclusively (`medseg.locks`). A bad input stops the command before any
    write, unless `keep_going`: then the bad inputs are skipped, the rest predicted, and
    `InputsSkipped` lists the failures at the end.

    `uncertainty=True` adds per-voxel uncertainty maps (OUT/uncertainty/) and per-case scores and
    flags (OUT/uncertainty.csv, .json), from the same network passes as the masks, with the run's
    calibration (`medseg.inference.uncertainty_outputs` states the file contract).

    Under torchrun (WORLD_SIZE > 1) the ranks share the cases (`distributed.my_share`: rank r
    of W checks and predicts cases r, r + W, ...; every case is written once, by one rank). Rank
    0 alone holds OUT's lock, checks and records the folder, and writes the statistics and
    uncertainty tables of all cases once every rank's rows are gathered; the others wait for
    its verdict on the folder before writing anything.
    """
    if distributed.launched():
        device = str(distributed.init_from_env(resolve_device(device)))
    try:
        return _predict(run, inputs, out, device=device, checkpoint=checkpoint, overlap=overlap, mirror=mirror,
                        overlays=overlays, overwrite=overwrite, output_format=output_format, folds=folds,
                        postprocess=postprocess, backend=backend, skip_empty=skip_empty, compile=compile,
                        keep_going=keep_going, uncertainty=uncertainty)
    finally:
        distributed.shutdown()


def _predict(run, inputs, out, *, device, checkpoint, overlap, mirror, overlays, overwrite, output_format, folds,
             postprocess, backend, skip_empty, compile, keep_going, uncertainty) -> list[Path]:
    predictor = Predictor(run, checkpoint=checkpoint, device=device, overlap=overlap, mirror=mirror,
                          folds=folds, postprocess=postprocess, backend=backend, skip_empty=skip_empty,
                          compile=compile)
    items = prediction_inputs(inputs, predictor.in_channels, predictor.dataset.channel_names)
    out = Path(out)
    dims = predictor.members[0].spatial_dims
    bad: list[tuple[int, MedsegInputError]] = []  # (input index, problem): each rank checks its own share
    for index in distributed.my_share(len(items)):
        try:
            check_input(items[index], predictor.in_channels, dims)
            check_dicom_output(items[index], output_format)
        except MedsegInputError as err:
            bad.append((index, err))
    bad = sorted(distributed.gather_lists(bad), key=lambda pair: pair[0])
    failures = [err for _, err in bad]
    items = [item for index, item in enumerate(items) if index not in {i for i, _ in bad}]
    if failures and not keep_going:
        more = f" (and {len(failures) - 1} more bad input(s); --keep-going predicts the others)" if len(failures) > 1 else ""
        raise MedsegInputError(failures[0].path, failures[0].problem + more)
    total = len(items) + len(failures)
    targets = [out / f"{item.case_id}{output_suffix(item, output_format)}" for item in items]
    if len(set(targets)) != len(targets):
        dup = sorted({t.name for t in targets if targets.count(t) > 1})
        raise MedsegInputError(Path(inputs), f"several inputs would write the same mask: {dup[:5]}")
    resolved_inputs = {f.resolve() for item in items for f in item.files}
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise MedsegInputError(target, "is an input image; choose an --out folder that is not the input folder")
    written: list[tuple[int, Path]] = []  # (case index, ...): the ranks' results are merged in input order
    statistics: list[tuple[int, dict]] = []
    unread: list[MedsegInputError] = []
    with ExitStack() as held:
        verdict = None  # rank 0 locks, checks and records OUT; every rank follows its verdict
        if distributed.is_main():
            try:
                held.enter_context(output_lock(out, "--out folder of the masks"))
                check_output_folder(out, targets, overwrite=overwrite, what="masks", tag="predictions")
                record_outputs(out, [t.name for t in targets] + [STATISTICS_CSV, STATISTICS_JSON]
                               + (["overlays/"] if overlays else [])
                               + ([f"{UNCERTAINTY_DIR}/", UNCERTAINTY_CSV, UNCERTAINTY_JSON] if uncertainty else []),
                               "medseg predict")
            except (MedsegInputError, OSError) as err:
                verdict = err
        verdict = distributed.broadcast_object(verdict)
        if verdict is not None:
            raise verdict
        uncertain_rows: list[tuple[int, dict]] = []
        share = distributed.my_share(len(items))
        for done, index in enumerate(tqdm(share, desc="predicting", unit="case",
                                          disable=None if distributed.is_main() else True)):
            item, target = items[index], targets[index]
            predictor.cases_ahead = len(share) - done - 1
            try:
                case = read_input_case(item, predictor.in_channels)
            except MedsegInputError as err:
                if not keep_going:
                    raise
                unread.append(err)
                continue
            if uncertainty:
                result = predictor.predict_uncertain(case)
                mask = result.mask
                write_case_maps(out, case, target.name[len(item.case_id):], result, dims)
                uncertain_rows.append((index, uncertainty_row(case, result, predictor.class_names)))
                del result
            else:
                mask = predictor.segment(case)
            if write_prediction(target, mask, case, output_format, predictor.class_names, predictor.run.name):
                written.append((index, target))
            statistics.extend((index, row) for row in structure_statistics(
                item.case_id, mask, case.image, case.spacing, predictor.class_names,
                spacing_known="geometry" in case.meta, channel_names=predictor.dataset.channel_names))
            if overlays:
                save_overlay(out / "overlays" / f"{item.case_id}.png", case.image, mask, spacing=case.spacing)
        statistics = _in_input_order(statistics)
        uncertain = _in_input_order(uncertain_rows)
        paths = _in_input_order(written)
        failures += distributed.gather_lists(unread)
        if statistics and distributed.is_main():
            write_statistics(out, statistics)
        if uncertain and distributed.is_main():
            write_uncertainty_tables(out, uncertain, {
                "temperature": predictor.calibration.get("temperature", 1.0),
                "flag_threshold": predictor.calibration.get("flag_threshold"),
                "calibrated_on": predictor.calibration.get("fitted_on")})
    if failures:
        raise InputsSkipped(Path(inputs), failures, total)
    return paths


def _in_input_order(pairs: list[tuple[int, object]]) -> list:
    """Every rank's (case index, value) pairs, as values in the order of the cases."""
    return [value for _, value in sorted(distributed.gather_lists(pairs), key=lambda pair: pair[0])]
