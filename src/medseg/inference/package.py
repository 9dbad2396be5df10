"""Model packages: one zip that carries a trained model to another machine or person
(`medseg export RUN --package model.medseg.zip`) and predicts from there
(`medseg predict model.medseg.zip INPUT --out DIR`).

What the zip holds (a slimmed run folder, so the Predictor reads it as it reads a run):
    checkpoints/best.pt          weights and what prediction needs (model spec, label mapping, class
                                 names, preprocessing, channel names, patch), no optimiser state
    run.json, plan.json          the run's record and plan (the training data's fingerprint)
    fold_K/...                   the same per fold, for a cross-validation folder (an ensemble)
    postprocessing.json          the postprocessing chosen on validation data, when the run has one
    calibration.json             the temperature and flag threshold fitted on validation data, when there
    validation_metrics.json      the run's validation summary (RUN/validation/summary.json)
    package.json                 format, date, medseg / torch / Python versions, classes, channels
    MODEL_CARD.md                what the model is, what it was trained and checked on, intended use
    MANIFEST.sha256              the SHA-256 of every other file (`sha256sum -c` reads it)

Trust rules, and why: a package comes from elsewhere, so before anything is loaded every file is
checked against the manifest (a flipped byte, a truncated or altered zip, a file added or
missing: refused, one line naming the package), names that could escape the unpacking folder are
refused, and checkpoints are loaded weights-only (`runs.load_checkpoint`): a pickled object that
could run code is refused too. The manifest proves integrity, not authorship: share its SHA-256
(or the package's) by another channel when that matters.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import tempfile
import zipfile
import zlib
from importlib import metadata
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import MedsegInputError
from ..report.run_report import SUMMARY_JSON, VALIDATION_DIR
from ..runs import (CALIBRATION_FILE, CHECKPOINTS, PLAN_FILE, RUN_INFO, find_checkpoint, fold_runs, load_checkpoint,
                    not_a_run)
from .postprocess import POSTPROCESSING_FILE

__all__ = ["PACKAGE_FORMAT", "MANIFEST", "export_package", "read_package", "unpack_package"]

PACKAGE_FORMAT = "medseg-package-1"
MANIFEST = "MANIFEST.sha256"
CARD = "MODEL_CARD.md"
INFO = "package.json"
METRICS = "validation_metrics.json"
MAX_UNPACKED_BYTES = 16 * 1024 ** 3  # a zip that unpacks larger than this is refused (a zip bomb)
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
# checkpoint entries prediction needs; the optimiser, the raw (pre-EMA) weights and RNG state stay behind
KEPT_STATE = ("format", "model", "model_name", "model_options", "in_channels", "num_classes", "spatial_dims",
              "class_names", "label_mapping", "preprocessor", "dataset", "patch_size", "config", "epoch",
              "iteration", "elapsed_s", "best_score", "autocast")
NO_CARD = "Not stated by the author. medseg models are research tools, not medical devices."


def _versions() -> dict:
    try:
        medseg = metadata.version("medseg")
    except metadata.PackageNotFoundError:
        medseg = "unknown"
    return {"medseg": medseg, "torch": torch.__version__, "python": platform.python_version()}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _slim_checkpoint(path: Path) -> tuple[bytes, dict]:
    state = load_checkpoint(path)
    slim = {k: state[k] for k in KEPT_STATE if k in state}
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    return buffer.getvalue(), slim


def _fingerprint_lines(plan: dict | None, info: dict) -> list[str]:
    """The training data in a few lines: from the plan's fingerprint, else from run.json."""
    fp = (plan or {}).get("fingerprint") or {}
    if not fp:
        cases = info.get("cases") or {}
        return [f"- dataset layout: {(info.get('dataset') or {}).get('layout', 'unknown')}; "
                f"{cases.get('train', '?')} training and {cases.get('val', '?')} validation cases (no plan fingerprint)"]
    lines = [f"- {fp.get('cases')} cases, {fp.get('spatial_dims')}D, layout {fp.get('layout')}, "
             f"channels {', '.join(map(str, fp.get('channels') or []))}",
             f"- median shape {fp.get('median_shape')}, median spacing {fp.get('median_spacing')} mm"]
    for stat in fp.get("class_stats") or []:
        lines.append(f"- class {stat.get('class')} {stat.get('name')}: present in {stat.get('cases_present')} of "
                     f"{stat.get('cases')} cases, median {stat.get('median_voxels')} voxels")
    return lines


def _metric_lines(metrics: dict | None, info: dict) -> list[str]:
    summary = (metrics or {}).get("summary") or {}
    lines = []
    for index, s in sorted(summary.items(), key=lambda kv: int(kv[0])):
        dice = s.get("dice") if isinstance(s, dict) else None
        if int(index) > 0 and dice:
            lines.append(f"- {s.get('class_name', index)}: Dice {dice['mean']:.3f} ± {dice['std']:.3f} (n={dice['n']})")
    if not lines and info.get("best_val_dice_mean") is not None:
        lines.append(f"- mean foreground Dice on the validation patches during training: {info['best_val_dice_mean']:.3f}")
    return lines or ["- none recorded (the run had no validation cases, or was not finished)"]


def _model_card(name: str, meta: dict, plan: dict | None, info: dict, metrics: dict | None, use: str) -> str:
    channels = ", ".join(meta["channel_names"] or [f"{meta['in_channels']} unnamed"])
    lines = [f"# medseg model: {name}", "",
             f"Packaged {meta['created']} with medseg {meta['versions']['medseg']}, torch {meta['versions']['torch']}, "
             f"Python {meta['versions']['python']}.", "",
             "## Model", f"- network {meta['model']}, {meta['spatial_dims']}D, patch {meta['patch_size']}, "
             f"{len(meta['members'])} member(s) averaged",
             f"- input channels: {channels}", f"- classes: {', '.join(meta['class_names'])}",
             f"- label mapping: {json.dumps(meta['label_mapping'])}",
             f"- preprocessing: {json.dumps(meta['preprocessing'])}", "",
             "## Training data", *_fingerprint_lines(plan, info), "",
             "## Validation", *_metric_lines(metrics, info), "",
             "## Intended use and limits", use.strip() or NO_CARD, "",
             "## Checking this package",
             f"Every file's SHA-256 is in {MANIFEST}; `medseg predict` checks them all before loading and loads "
             "weights only. By hand: unzip, then `sha256sum -c MANIFEST.sha256`.", ""]
    return "\n".join(lines)


def export_package(run: str | os.PathLike, out: str | os.PathLike, *, card: str | os.PathLike | None = None,
                   checkpoint: str = "best") -> Path:
    """Write RUN (a run or a cross-validation folder) as a model package at `out`; returns it.
    `card`: a text file with the intended use and limits, copied into the model card. Never
    replaces an existing file; written atomically and verified by reading it back."""
    run, out = Path(run), Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose another file or remove it")
    use = ""
    if card is not None:
        try:
            use = Path(card).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise MedsegInputError(Path(card), f"cannot read the model card text ({exc})") from exc
    files: dict[str, bytes] = {}
    members, first_plan, first_info, first_state = [], None, {}, None
    members_found = [run] if (run / CHECKPOINTS).is_dir() else fold_runs(run)
    if not members_found:
        raise not_a_run(run, "no checkpoints/ and no trained fold_K/ folders")
    for member in members_found:
        prefix = "" if member == run else f"{member.name}/"
        weights, state = _slim_checkpoint(find_checkpoint(member, checkpoint))
        files[f"{prefix}checkpoints/best.pt"] = weights
        info = _read_json(member / RUN_INFO) or {}
        if "data" in info:  # the folder name says which data; the full path says only where it was
            info["data"] = Path(str(info["data"])).name
        files[f"{prefix}{RUN_INFO}"] = json.dumps(info, indent=2).encode()
        plan = _read_json(member / PLAN_FILE)
        if plan is not None:
            files[f"{prefix}{PLAN_FILE}"] = json.dumps(plan, indent=2).encode()
        if first_state is None:
            first_plan, first_info, first_state = plan, info, state
        members.append({"folder": prefix.rstrip("/") or ".", "epoch": state.get("epoch"),
                        "iteration": state.get("iteration"), "finished": info.get("finished")})
    if (run / POSTPROCESSING_FILE).is_file():
        files[POSTPROCESSING_FILE] = (run / POSTPROCESSING_FILE).read_bytes()
    if (run / CALIBRATION_FILE).is_file():  # the temperature and flag threshold `--uncertainty` applies
        files[CALIBRATION_FILE] = (run / CALIBRATION_FILE).read_bytes()
    metrics = _read_json(run / VALIDATION_DIR / SUMMARY_JSON)
    if metrics is not None:
        files[METRICS] = json.dumps(metrics, indent=2).encode()
    assert first_state is not None
    meta = {"format": PACKAGE_FORMAT, "name": run.name, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(), "model": first_state["model_name"], "spatial_dims": first_state["spatial_dims"],
            "in_channels": first_state["in_channels"], "patch_size": first_state["patch_size"],
            "channel_names": (first_state.get("dataset") or {}).get("channel_names"),
            "class_names": list(first_state["class_names"]), "label_mapping": first_state["label_mapping"],
            "preprocessing": first_state["preprocessor"], "members": members}
    files[INFO] = json.dumps(meta, indent=2).encode()
    files[CARD] = _model_card(run.name, meta, first_plan, first_info, metrics, use).encode()
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    with atomic_path(out, check=read_package) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in sorted(files.items()):
                z.writestr(name, data)
            z.writestr(MANIFEST, manifest)
    return out


def _manifest(path: Path, text: bytes) -> dict[str, str]:
    entries = {}
    for line in text.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            raise MedsegInputError(path, f"refused: its {MANIFEST} has a malformed line ({line[:60]!r})")
        entries[name] = digest
    return entries


def read_package(path: str | os.PathLike) -> dict[str, bytes]:
    """Every file of a model package by name, each checked against the manifest. Raises
    `MedsegInputError` naming the package when it is not a zip, is truncated or damaged, lacks or
    adds a file, holds an unsafe name, or any file differs from its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise MedsegInputError(path, "no model package here (expected a .medseg.zip file from `medseg export --package`)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if MANIFEST not in names:
                raise MedsegInputError(path, f"is not a medseg model package (no {MANIFEST} in it)")
            bad = [n for n in names if not SAFE_NAME.fullmatch(n) or ".." in n.split("/")]
            if bad or len(set(names)) != len(names):
                raise MedsegInputError(path, f"refused: unsafe or repeated file name(s) in the package: {(bad or names)[:3]}")
            if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
                raise MedsegInputError(path, f"refused: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB")
            manifest = _manifest(path, z.read(MANIFEST))
            listed = set(manifest)
            extra, missing = set(names) - listed - {MANIFEST}, listed - set(names)
            if extra or missing:
                what = f"file(s) not in its manifest: {sorted(extra)[:3]}" if extra else f"missing file(s): {sorted(missing)[:3]}"
                raise MedsegInputError(path, f"refused: {what} (the package was altered)")
            files = {}
            for name, digest in manifest.items():
                data = z.read(name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise MedsegInputError(path, f"refused: {name} does not match its SHA-256 in {MANIFEST} "
                                           "(the package was altered or damaged)")
                files[name] = data
    except MedsegInputError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MedsegInputError(path, f"refused: the package is truncated or damaged ({first})") from exc
    meta = _read_bytes_json(files.get(INFO))
    if meta.get("format") != PACKAGE_FORMAT:
        raise MedsegInputError(path, f"is not a {PACKAGE_FORMAT} model package (format {meta.get('format')!r})")
    return files


def _read_bytes_json(data: bytes | None) -> dict:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def package_name(path: Path) -> str:
    """model.medseg.zip -> model."""
    name = path.name
    for suffix in (".medseg.zip", ".zip"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def unpack_package(path: str | os.PathLike) -> tuple[tempfile.TemporaryDirectory, Path]:
    """(temporary folder, the run folder in it) of a verified package (`read_package`), every
    checkpoint in it loaded once weights-only so a refused one is named with the package. The
    folder is removed when the returned TemporaryDirectory is closed or collected."""
    path = Path(path)
    files = read_package(path)
    holder = tempfile.TemporaryDirectory(prefix="medseg-package-")
    root = Path(holder.name) / package_name(path)
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for name in files:
        if name.endswith(".pt"):
            try:
                load_checkpoint(root / name)
            except MedsegInputError as exc:
                holder.cleanup()
                raise MedsegInputError(path, f"{name}: {exc.problem}") from exc
    return holder, root
