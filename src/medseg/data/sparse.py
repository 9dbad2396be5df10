"""Sparse annotation made from full labels: keep every n-th slice, mark the rest "not annotated".

What a user saves by labelling a few slices can be measured before anyone labels anything: take a
fully labelled dataset, hide most slices behind the ignore value, train, and score on full labels
(docs/decisions.md, "Sparse labels"; `tests/data/test_sparse.py`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DEFAULT_IGNORE = 255


def sparsify_slices(label: np.ndarray, keep_every: int = 5, axis: int = 0, offset: int = 2,
                    ignore: int = DEFAULT_IGNORE) -> np.ndarray:
    """A copy of `label` where only slices `offset, offset + keep_every, ...` along `axis` keep their
    classes and every other slice holds `ignore` (keep_every=5: 80 % of the slices ignored)."""
    if keep_every < 1:
        raise ValueError(f"keep_every must be >= 1, got {keep_every}")
    out = np.full_like(label, ignore)
    index = [slice(None)] * label.ndim
    index[axis] = slice(offset % keep_every, None, keep_every)
    out[tuple(index)] = label[tuple(index)]
    return out


def write_sparse_msd(src: str | os.PathLike, dst: str | os.PathLike, cases: list[str] | None = None,
                     keep_every: int = 5, axis: int = 0, ignore: int = DEFAULT_IGNORE) -> Path:
    """An MSD dataset at `dst` whose labels keep one slice in `keep_every` along array `axis`
    (SimpleITK order: axis 0 is z, the axial slices) and mark the rest `ignore`, declared in
    dataset.json as the label "ignore" (nnU-Net v2's convention). Images are symlinked; labels are
    written with their source's geometry. `cases`: case ids (file stems) to take, default all."""
    src, dst = Path(src), Path(dst)
    desc = json.loads((src / "dataset.json").read_text())
    entries = [e for e in desc["training"]
               if cases is None or Path(e["image"]).name.split(".")[0] in set(cases)]
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for entry in entries:
        name = Path(entry["image"]).name
        image_link = dst / "imagesTr" / name
        if not image_link.exists():
            image_link.symlink_to((src / entry["image"]).resolve())
        label = sitk.ReadImage(str(src / entry["label"]))
        sparse = sitk.GetImageFromArray(sparsify_slices(sitk.GetArrayFromImage(label).astype(np.uint8),
                                                        keep_every, axis, ignore=ignore))
        sparse.CopyInformation(label)
        sitk.WriteImage(sparse, str(dst / "labelsTr" / Path(entry["label"]).name))
    desc["training"] = [{"image": f"./imagesTr/{Path(e['image']).name}", "label": f"./labelsTr/{Path(e['label']).name}"}
                        for e in entries]
    desc["numTraining"] = len(entries)
    desc["labels"] = {**desc["labels"], str(ignore): "ignore"}
    desc["description"] = (f"{desc.get('description', '')} -- sparse: one slice in {keep_every} along array axis "
                           f"{axis} labelled, the rest {ignore} (ignore)").strip()
    (dst / "dataset.json").write_text(json.dumps(desc, indent=2))
    return dst


__all__ = ["DEFAULT_IGNORE", "sparsify_slices", "write_sparse_msd"]
