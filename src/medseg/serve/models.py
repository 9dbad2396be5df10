"""The models a server offers: each run folder (or cross-validation folder, or model package)
described once from its checkpoint, without keeping the weights in the API process."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedsegInputError
from ..inference.package import unpack_package
from ..inference.predictor import member_runs
from ..io.layout import DatasetInfo
from ..report.overlay import class_colour
from ..runs import RUN_INFO, find_checkpoint, load_checkpoint


@dataclass
class ServedModel:
    """One model as the API lists it, and what an upload is checked against."""

    name: str
    path: Path                 # the run folder the workers load (a package: its unpacked folder)
    class_names: list[str]
    in_channels: int
    spatial_dims: int
    channel_names: list[str] | None
    plan: dict = field(default_factory=dict)

    def public(self) -> dict:
        classes = [{"index": i, "name": n, "colour": None if i == 0 else list(class_colour(i))}
                   for i, n in enumerate(self.class_names)]
        return {"name": self.name, "classes": classes, "dimensions": self.spatial_dims,
                "channels": self.channel_names or [f"channel{c}" for c in range(self.in_channels)],
                "plan": self.plan}


def _summary(state: dict, run: Path, members: int) -> dict:
    """The plan as a reader wants it: network, patch, working grid, folds, validation Dice."""
    pre = state.get("preprocessor") or {}
    info = {}
    if (run / RUN_INFO).is_file():
        info = json.loads((run / RUN_INFO).read_text(encoding="utf-8"))
    return {"network": state.get("model_name"), "patch_size": list(state.get("patch_size") or []),
            "target_spacing": pre.get("target_spacing"), "image_size": pre.get("image_size"),
            "normalization": [n.get("scheme") for n in pre.get("normalization") or []],
            "members": members, "trained_cases": (info.get("cases") or {}).get("train"),
            "validation_dice": info.get("best_val_dice_mean")}


def describe(path: Path, holders: list) -> tuple[str, ServedModel]:
    """A run folder, cross-validation folder or package as a ServedModel (its first member's
    checkpoint tells the classes, channels and dimensions). Packages are verified and unpacked
    once; `holders` keeps their temporary folders alive for the server's life."""
    path = Path(path)
    run = path
    if path.is_file():
        holder, run = unpack_package(path)
        holders.append(holder)
    runs = member_runs(run)
    state = load_checkpoint(find_checkpoint(runs[0], "best"))
    dataset = DatasetInfo.from_dict(state.get("dataset"))
    model = ServedModel(name="", path=run, class_names=list(state["class_names"]),
                        in_channels=int(state["in_channels"]), spatial_dims=int(state["spatial_dims"]),
                        channel_names=dataset.channel_names, plan=_summary(state, runs[0], len(runs)))
    name = path.name.removesuffix(".zip").removesuffix(".medseg") if path.is_file() else path.name
    return name, model


def served_models(paths: list[Path], holders: list) -> dict[str, ServedModel]:
    """Name -> model, in the order given; a name taken twice gets its parent folder's name too."""
    models: dict[str, ServedModel] = {}
    for path in paths:
        name, model = describe(path, holders)
        if name in models:
            name = f"{Path(path).resolve().parent.name}-{name}"
        if name in models:
            raise MedsegInputError(path, f"is served twice (the model {name!r} is already listed)")
        model.name = name
        models[name] = model
    return models
