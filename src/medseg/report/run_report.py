"""`medseg report RUN`: one self-contained HTML page about a training run.

The page is built only from what the run folder holds: ``run.json`` (settings, model, dataset,
split, time, and the plan when there is one), ``log.csv`` (learning curves),
``checkpoints/best.pt`` (model size and FLOPs) and ``validation/`` (per-case metrics and the
predicted masks, made by `ensure_validation` when an older run lacks them). Overlays re-read the
validation images and labels from the dataset folder recorded in ``run.json``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegInputError

__all__ = ["ensure_validation", "write_run_report", "read_run_info", "read_metrics_csv", "rank_cases",
           "model_cost", "VALIDATION_DIR", "REPORT_NAME"]

REPORT_NAME = "report.html"

VALIDATION_DIR = "validation"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
VALIDATION_INFO = "validation.json"


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """run.json of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise MedsegInputError(Path(run_dir), "is not a medseg run folder (no run.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedsegInputError(path, f"is not valid JSON ({exc})") from exc


def ensure_validation(run_dir: str | os.PathLike, *, device: str = "auto", checkpoint: str = "best",
                      overwrite: bool = False) -> Path:
    """RUN/validation with one predicted mask per validation case, metrics.csv and summary.json.

    Returns at once when metrics.csv and summary.json are already there (unless `overwrite`).
    When only they are missing but every mask is there, the masks are evaluated again without
    predicting. Otherwise predicts the run's validation split (run.json ``split.val``) from the dataset folder
    recorded in run.json with the `checkpoint` weights, writes each mask as
    ``<case id><suffix>`` in the input's format and geometry (`medseg.predict.output_suffix`),
    and evaluates them with every metric (`medseg.evaluate.evaluate`, the run's label mapping and
    class names). ``validation.json`` records the checkpoint and the seconds spent. A run without
    validation cases gets the folder with only validation.json in it.
    """
    run = Path(run_dir)
    info = read_run_info(run)
    out = run / VALIDATION_DIR
    if not overwrite and (out / METRICS_CSV).is_file() and (out / SUMMARY_JSON).is_file():
        return out
    val_ids = [str(c) for c in (info.get("split") or {}).get("val", [])]
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"cases": len(val_ids), "checkpoint": checkpoint}
    if not val_ids:
        _write_json(out / VALIDATION_INFO, {**record, "note": "this run has no validation cases"})
        return out

    from medseg.evaluate import evaluate
    from medseg.io import describe_dataset, write_mask
    from medseg.io.layout import InputCase
    from medseg.io.registry import case_stem
    from medseg.predict import Predictor, output_suffix, read_input_case

    data = Path(info["data"])
    pairs, _ = describe_dataset(data)
    by_id = {p.case_id: p for p in pairs}
    gone = [c for c in val_ids if c not in by_id or by_id[c].label is None]
    if gone:
        raise MedsegInputError(data, f"{len(gone)} validation case(s) of {run} are not in this dataset "
                                     f"(or have no label): {', '.join(gone[:10])}")
    val_pairs = [by_id[c] for c in val_ids]
    label_dirs = {p.label.parent for p in val_pairs}
    renamed = [p.label for p in val_pairs if case_stem(p.label) != p.case_id]
    if len(label_dirs) != 1 or renamed:
        raise MedsegInputError(data, "validation labels must sit in one folder named by case id "
                                     f"(found {len(label_dirs)} folder(s); e.g. {renamed[:1]})")

    start = time.perf_counter()
    targets = {p.case_id: out / f"{p.case_id}{output_suffix(InputCase(p.case_id, p.image_files), None)}"
               for p in val_pairs}
    if overwrite or not all(t.is_file() for t in targets.values()):
        predictor = Predictor(run, checkpoint=checkpoint, device=device)
        for stale in out.iterdir():  # masks of an earlier, interrupted attempt
            if stale.is_file() and stale.name not in (VALIDATION_INFO,):
                stale.unlink()
        for pair in val_pairs:
            item = InputCase(pair.case_id, pair.image_files)
            case = read_input_case(item, predictor.in_channels)
            write_mask(targets[pair.case_id], predictor.segment(case), case.meta)
        record["predict_s"] = round(time.perf_counter() - start, 2)
    else:  # every mask is there (e.g. only the metrics were deleted): evaluate them again
        previous = out / VALIDATION_INFO
        if previous.is_file():
            record["predict_s"] = json.loads(previous.read_text()).get("predict_s")

    start = time.perf_counter()
    tmp_csv, tmp_json = out / (METRICS_CSV + ".tmp"), out / (SUMMARY_JSON + ".tmp")
    evaluate(out, label_dirs.pop(), cases=val_ids, mapping=info.get("label_mapping"),
             class_names=info.get("class_names"), csv_path=tmp_csv, json_path=tmp_json)
    os.replace(tmp_csv, out / METRICS_CSV)  # written last: their presence means "complete"
    os.replace(tmp_json, out / SUMMARY_JSON)
    record["evaluate_s"] = round(time.perf_counter() - start, 2)
    _write_json(out / VALIDATION_INFO, record)
    return out


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ----------------------------------------------------------------------------------- report

# (metric, column title, decimals) of the summary table
SUMMARY_COLUMNS = (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("precision", "Precision", 3),
                   ("sensitivity", "Sensitivity", 3), ("specificity", "Specificity", 3),
                   ("hd95", "HD95 mm", 2), ("assd", "ASSD mm", 2), ("nsd", "NSD", 3), ("rvd", "RVD", 3),
                   ("ref_volume", "Volume", 2), ("lesion_f1", "Lesion F1", 3))
MAX_CASE_ROWS = 300
MAX_OVERLAY_SIDE = 512  # 2D overlays are shrunk to this for the page (Kvasir images are ~1000 px)


def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """metrics.csv rows with numbers as floats (class as int) and empty cells left out."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, value in raw.items():
                if value in (None, ""):
                    continue
                if key in ("case", "class_name", "status"):
                    row[key] = value
                elif key == "class":
                    row[key] = int(value)
                else:
                    try:
                        row[key] = float(value)
                    except ValueError:
                        row[key] = value
            rows.append(row)
    return rows


def rank_cases(rows: Sequence[dict]) -> list[dict]:
    """Cases worst first: by mean foreground Dice, then by the larger HD95.

    Each item: case, score (mean foreground Dice, or Dice of class 0 when there is no foreground),
    and per-class rows under "classes" ({class: row}).
    """
    by_case: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_case.setdefault(str(row["case"]), {})[int(row["class"])] = row
    ranked = []
    for case, classes in by_case.items():
        fg = [r for k, r in classes.items() if k > 0] or list(classes.values())
        hd = max((r.get("hd95", 0.0) for r in fg), default=0.0)
        ranked.append({"case": case, "score": float(np.mean([r["dice"] for r in fg])), "hd95": hd,
                       "classes": classes})
    return sorted(ranked, key=lambda c: (c["score"], -c["hd95"], c["case"]))


def model_cost(run_dir: str | os.PathLike) -> dict:
    """Model name, parameters and FLOPs of one forward pass of one training patch (batch 1).

    Counted with `torch.utils.flop_counter.FlopCounterMode` on PyTorch's meta device (no weights
    or activations in memory), falling back to a real forward pass on the CPU. FLOPs are
    PyTorch's count: a multiply-add is 2 FLOPs; element-wise operations are not counted.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.checkpoint import find_checkpoint, load_checkpoint
    from medseg.nets import build_model, count_parameters

    state = load_checkpoint(find_checkpoint(Path(run_dir), "best"))
    patch = tuple(int(p) for p in state["patch_size"])
    args = (state["model_name"], int(state["in_channels"]), int(state["num_classes"]), int(state["spatial_dims"]))
    out = {"name": state["model_name"], "options": state.get("model_options", {}), "patch": list(patch),
           "parameters": None, "flops": None}
    for where in ("meta", "cpu"):
        try:
            with torch.device(where):
                model = build_model(*args, **state.get("model_options", {})).eval()
                out["parameters"] = count_parameters(model)
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    model(torch.zeros((1, args[1]) + patch))
            out["flops"] = int(counter.get_total_flops())
            return out
        except Exception:  # noqa: BLE001 - some layers have no meta kernel; try the CPU
            continue
    return out


def write_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, device: str = "auto",
                     title: str | None = None, extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the run's HTML report (default RUN/report.html) and return its path.

    Makes RUN/validation first when it is missing (`ensure_validation`). extra_sections:
    (heading, HTML) pairs added after the metrics (the demo adds its test-set table).
    """
    from medseg.report.boxplots import plot_case_boxes
    from medseg.report.curves import plot_learning_curves, read_log
    from medseg.report.html import page

    started = time.perf_counter()
    run = Path(run_dir)
    info = read_run_info(run)
    val_dir = ensure_validation(run, device=device)
    out = Path(out) if out is not None else run / REPORT_NAME
    class_names = list(info.get("class_names") or [])
    rows = read_metrics_csv(val_dir / METRICS_CSV) if (val_dir / METRICS_CSV).is_file() else []
    evaluation = json.loads((val_dir / SUMMARY_JSON).read_text()) if (val_dir / SUMMARY_JSON).is_file() else {}
    record = json.loads((val_dir / VALIDATION_INFO).read_text()) if (val_dir / VALIDATION_INFO).is_file() else {}
    settings = evaluation.get("settings", {})
    if not class_names:
        class_names = list(settings.get("class_names") or [])
    ranked = rank_cases(rows)
    title = title or f"medseg run: {run.resolve().name}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = run / "log.csv"
        curves = plot_learning_curves(log, tmp / "curves.png") if log.is_file() and read_log(log) else None
        boxes = plot_case_boxes(rows, class_names, tmp / "boxes.png", tolerance=settings.get("nsd_tolerance_mm"),
                                unit=settings.get("distance_unit", "mm"))
        overlays = _overlays(info, val_dir, ranked, tmp) if ranked else []
        cost = _safe_model_cost(run)
        sections = [
            f"<h1>{escape(title)}</h1>",
            f'<p class="muted">{escape(str(run.resolve()))}</p>',
            "<h2>Validation metrics</h2>", _summary_section(evaluation, class_names, len(ranked)),
            "<h2>Per-case distribution</h2>", _image(boxes, "per-case box plots", "curve")
            if boxes else '<p class="muted">No per-case metrics.</p>',
            "<h2>Best, median and worst validation cases</h2>", _overlay_section(overlays, class_names, info),
            "<h2>Learning curves</h2>", _image(curves, "learning curves", "curve")
            if curves else '<p class="muted">No training log for this run.</p>',
            _tensorboard_note(run),
        ]
        for heading, body in extra_sections:
            sections += [f"<h2>{escape(heading)}</h2>", body]
        sections += [
            "<h2>Cases, worst first</h2>", _cases_section(ranked, class_names, settings.get("distance_unit", "mm")),
            "<h2>Data</h2>", _facts(_data_facts(info)),
            "<h2>Model</h2>", _facts(_model_facts(info, cost)),
            "<h2>Plan</h2>", _plan_section(info.get("plan")),
            "<h2>Time spent</h2>", _facts(_time_facts(info, record, time.perf_counter() - started)),
        ]
        html = page(title, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(html, encoding="utf-8")
    os.replace(tmp_out, out)
    return out


# ------------------------------------------------------------------------- report sections

def _image(path: Path | None, alt: str, css: str) -> str:
    from medseg.report.html import data_uri

    return f'<img class="{css}" src="{data_uri(path)}" alt="{escape(alt)}">' if path else ""


def _facts(facts: dict) -> str:
    if not facts:
        return '<p class="muted">Not recorded.</p>'
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in facts.items())
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _summary_section(evaluation: dict, class_names: list[str], n_cases: int) -> str:
    summary = evaluation.get("summary") or {}
    settings = evaluation.get("settings") or {}
    if not summary:
        return '<p class="muted">This run has no validation cases, so there are no metrics.</p>'
    keys = sorted(summary, key=lambda k: (int(k) == 0, int(k)))  # foreground first, background last
    names = [str(summary[k].get("class_name") or _name(class_names, int(k))) for k in keys]
    unit = settings.get("volume_unit", "")
    dist_unit = settings.get("distance_unit", "mm")
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for metric, title, d in SUMMARY_COLUMNS:
        if not any(metric in summary[k] for k in keys):
            continue
        label = title.replace("mm", dist_unit) + (f" ({unit})" if metric == "ref_volume" and unit else "")
        if metric == "ref_volume" and unit == "px":
            d = 0  # a pixel count
        cells = []
        for k in keys:
            st = summary[k].get(metric)
            if not st:
                cells.append('<td class="num muted">-</td>')
                continue
            cells.append(f'<td class="num">{_fmt(st["mean"], d)} ± {_fmt(st["std"], d)}'
                         f'<span class="stat">median {_fmt(st["median"], d)} · {_fmt(st["min"], d)}–'
                         f'{_fmt(st["max"], d)}</span></td>')
        body.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    for status in ("missed", "spurious"):
        cells = "".join(f'<td class="num">{summary[k].get("cases", {}).get(status, 0)}</td>' for k in keys)
        body.append(f"<tr><th>cases {status}</th>{cells}</tr>")
    tol = settings.get("nsd_tolerance_mm", 1.0)
    note = (f"{n_cases} validation cases; mean ± std over cases, below: median · min–max. "
            f"Distances in {dist_unit} (spacing: {escape(str(settings.get('spacing_source', '')))}), "
            f"NSD at {tol:g} {dist_unit}, "
            "HD95 = 95th percentile Hausdorff distance, ASSD = average symmetric surface distance, "
            "RVD = relative volume difference, Volume = reference volume. <b>missed</b>: cases where the class is in the reference only; "
            "<b>spurious</b>: in the prediction only. Both stay in every mean with Dice 0 and the image "
            "diagonal as their distances (no case is dropped, nothing is NaN); a class in neither scores "
            "Dice 1 and distance 0.")
    return (f'<table class="summary"><thead><tr><th>metric</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table><p class=\"note\">{note}</p>")


def _cases_section(ranked: list[dict], class_names: list[str], unit: str = "mm") -> str:
    if not ranked:
        return '<p class="muted">No validation cases.</p>'
    classes = sorted({k for c in ranked for k in c["classes"] if k > 0}) or [0]
    head = "".join(f"<th>Dice {escape(_name(class_names, k))}</th><th>HD95 {unit} {escape(_name(class_names, k))}</th>"
                   for k in classes)
    body = []
    for i, c in enumerate(ranked[:MAX_CASE_ROWS], start=1):
        statuses = [c["classes"][k].get("status", "") for k in classes if k in c["classes"]]
        flag = next((s for s in statuses if s in ("missed", "spurious")), "")
        cells = "".join(f'<td class="num">{_fmt(c["classes"].get(k, {}).get("dice"), 3)}</td>'
                        f'<td class="num">{_fmt(c["classes"].get(k, {}).get("hd95"), 2)}</td>' for k in classes)
        notes = ", ".join(f"{_name(class_names, k)} {c['classes'][k]['status']}" for k in classes
                          if c["classes"].get(k, {}).get("status") in ("missed", "spurious"))
        body.append(f'<tr class="{flag}"><td class="num">{i}</td><td>{escape(c["case"])}</td>'
                    f'<td class="num">{_fmt(c["score"], 3)}</td>{cells}<td>{escape(notes)}</td></tr>')
    more = (f'<p class="muted">The {len(ranked) - MAX_CASE_ROWS} best cases are left out; all are in '
            "validation/metrics.csv.</p>" if len(ranked) > MAX_CASE_ROWS else "")
    return (f'<div class="cases"><table><thead><tr><th>#</th><th>case</th><th>mean Dice</th>{head}<th>note</th>'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>{more}"
            '<p class="note">Sorted by mean foreground Dice, worst first; per-case values of every metric are '
            "in validation/metrics.csv.</p>")


def _name(class_names: list[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class{k}"


def _overlays(info: dict, val_dir: Path, ranked: list[dict], tmp: Path) -> list[dict]:
    """Best, median and worst case pictures: [{tag, case, score, panels: [(caption, png)]}]."""
    from medseg.io import describe_dataset, read_mask
    from medseg.io.dataset import read_case
    from medseg.io.labels import LabelMapping
    from medseg.io.registry import case_stem

    picks, seen = [], set()
    for tag, item in (("worst", ranked[0]), ("best", ranked[-1]), ("median", ranked[len(ranked) // 2])):
        if item["case"] not in seen:  # fewer than three cases: each shown once, worst and best first
            seen.add(item["case"])
            picks.append((tag, item))
    picks.sort(key=lambda p: ("worst", "median", "best").index(p[0]))
    pairs, dataset = describe_dataset(Path(info["data"]))
    by_id = {p.case_id: p for p in pairs}
    masks = {case_stem(p): p for p in val_dir.iterdir() if p.is_file() and p.suffix not in (".csv", ".json", ".tmp")}
    mapping = LabelMapping.from_dict(info["label_mapping"]) if info.get("label_mapping") else None
    out = []
    for tag, item in picks:
        case_id = item["case"]
        if case_id not in by_id or case_id not in masks:
            continue
        case = read_case(by_id[case_id], mapping, dataset.channels)
        pred = np.asarray(read_mask(masks[case_id])).astype(np.int64)
        panels = _case_panels(case, pred, tmp / f"{tag}")
        out.append({"tag": tag, "case": case_id, "score": item["score"], "classes": item["classes"],
                    "panels": panels})
    return out


def _case_panels(case, pred: np.ndarray, stem: Path) -> list[tuple[str, Path]]:
    """2D: one overlay (shrunk for the page). 3D: orthogonal slices through the label's centre,
    and through the prediction's centre when that is elsewhere."""
    from PIL import Image

    from medseg.report.overlay import overlay, structure_centre, volume_overlay

    ref = np.asarray(case.label).astype(np.int64)
    if ref.ndim == 2:
        image, ref2, pred2 = _shrink(np.asarray(case.image), ref, pred)
        path = stem.with_suffix(".png")
        Image.fromarray(overlay(image, pred2, ref2)).save(path)
        return [("", path)]
    panels = []
    ref_c, pred_c = structure_centre(ref), structure_centre(pred)
    centres = [("slices through the centre of the label", ref_c or pred_c)]
    if ref_c is not None and pred_c is not None and ref_c != pred_c:
        centres.append(("slices through the centre of the prediction", pred_c))
    elif ref_c is None:
        centres[0] = ("no label: slices through the prediction" if pred_c else "both empty: centre of the volume",
                      pred_c)
    for i, (caption, centre) in enumerate(centres):
        path = stem.with_name(f"{stem.name}_{i}.png")
        Image.fromarray(volume_overlay(case.image, pred, ref, spacing=tuple(case.spacing), centre=centre)).save(path)
        panels.append((f"{caption} (axial · coronal · sagittal)", path))
    return panels


def _shrink(image: np.ndarray, ref: np.ndarray, pred: np.ndarray):
    """Image (C, H, W) and masks at most MAX_OVERLAY_SIDE pixels on the longer side."""
    from PIL import Image

    h, w = ref.shape
    scale = MAX_OVERLAY_SIDE / max(h, w)
    if scale >= 1:
        return image, ref, pred
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [np.asarray(Image.fromarray(c.astype(np.float32)).resize(size, Image.BILINEAR)) for c in image]
    small = lambda m: np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST)).astype(np.int64)  # noqa: E731
    return np.stack(channels), small(ref), small(pred)


def _overlay_section(overlays: list[dict], class_names: list[str], info: dict) -> str:
    from medseg.report.html import _legend

    if not overlays:
        return '<p class="muted">No validation cases to show.</p>'
    blocks = []
    for item in overlays:
        per_class = ", ".join(f"{_name(class_names, k)} {r['dice']:.3f}" for k, r in sorted(item["classes"].items())
                              if k > 0)
        caption = f"{item['tag']}: {item['case']} — mean foreground Dice {item['score']:.3f}" + \
                  (f" ({per_class})" if per_class else "")
        figures = "".join(f'<figure><img src="{_data_uri_of(p)}" alt="{escape(item["tag"] + " " + item["case"])}">'
                          + (f"<figcaption>{escape(c)}</figcaption>" if c else "") + "</figure>"
                          for c, p in item["panels"])
        blocks.append((caption, figures))
    three_d = any("axial" in c for item in overlays for c, _ in item["panels"])
    if three_d:  # one row per case: label-centred and prediction-centred slices side by side
        body = "".join(f'<h3>{escape(c)}</h3><div class="grid3d">{f}</div>' for c, f in blocks)
    else:  # 2D: one picture per case, in a grid
        body = '<div class="grid">' + "".join(
            f'<figure><img src="{_data_uri_of(item["panels"][0][1])}" alt="{escape(item["tag"] + " " + item["case"])}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
            for item, (caption, _) in zip(overlays, blocks)) + "</div>"
    return _legend(class_names[1:]) + body


def _data_uri_of(path: Path) -> str:
    from medseg.report.html import data_uri

    return data_uri(path)


def _tensorboard_note(run: Path) -> str:
    if (run / "tensorboard").is_dir():
        return (f'<p class="note">Scalars are also in TensorBoard: <code>tensorboard --logdir '
                f"{escape(str(run / 'tensorboard'))}</code></p>")
    return ""


def _data_facts(info: dict) -> dict:
    ds = info.get("dataset") or {}
    cases = info.get("cases") or {}
    pre = info.get("preprocessor") or {}
    facts = {"dataset": info.get("data", ""), "layout": ds.get("layout", "")}
    if ds.get("channel_names"):
        facts["channels"] = ", ".join(ds["channel_names"])
    facts["classes"] = ", ".join(info.get("class_names") or [])
    facts["cases"] = f"{cases.get('train', '?')} training, {cases.get('val', '?')} validation"
    facts["label rule"] = info.get("label_rule", "")
    for key, label in (("target_spacing", "working spacing (mm)"), ("image_size", "working image size")):
        if pre.get(key):
            facts[label] = "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in np.ravel(pre[key]))
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _model_facts(info: dict, cost: dict) -> dict:
    model = info.get("model") or {}
    config = info.get("config") or {}
    options = model.get("options") or cost.get("options") or {}
    facts = {"model": model.get("name") or cost.get("name", ""),
             "options": ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"}
    params = cost.get("parameters") or model.get("parameters")
    if params:
        facts["parameters"] = f"{int(params):,}"
    patch = cost.get("patch") or config.get("patch_size")
    if cost.get("flops"):
        facts["FLOPs per patch"] = (f"{cost['flops'] / 1e9:.2f} GFLOPs for one {'x'.join(map(str, patch))} patch "
                                    "(forward, batch 1; a multiply-add = 2 FLOPs)")
    elif patch:
        facts["patch"] = "x".join(map(str, patch))
    facts["loss"] = config.get("loss", "")
    if config.get("batch_size"):
        facts["batch size"] = config["batch_size"]
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _safe_model_cost(run: Path) -> dict:
    try:
        return model_cost(run)
    except Exception:  # noqa: BLE001 - the report still shows what run.json says
        return {}


def _plan_section(plan) -> str:
    if not plan:
        return '<p class="muted">This run has no plan (trained with fixed rules).</p>'
    if isinstance(plan, dict):
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_plan_value(v))}</td></tr>"
                       for k, v in plan.items() if k != "fingerprint")
        return f'<table class="facts"><tbody>{rows}</tbody></table>'
    return f'<pre class="plan">{escape(json.dumps(plan, indent=2))}</pre>'


def _plan_value(value) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) <= 400 else text[:400] + " ..."
    return str(value)


def _time_facts(info: dict, record: dict, report_s: float) -> dict:
    facts = {}
    if info.get("elapsed_s") is not None:
        facts["training"] = (f"{info['elapsed_s'] / 60:.1f} min, {info.get('epochs_done', '?')} epochs, "
                             f"{info.get('iterations_done', '?')} iterations on {info.get('device', '?')} "
                             f"({info.get('precision', '?')})" + ("" if info.get("finished") else ", not finished"))
    if record.get("predict_s") is not None:
        facts["validation prediction"] = f"{record['predict_s']:.1f} s for {record.get('cases', '?')} cases"
    if record.get("evaluate_s") is not None:
        facts["evaluation (all metrics)"] = f"{record['evaluate_s']:.1f} s"
    facts["this report"] = f"{report_s:.1f} s"
    if info.get("best_val_dice_mean") is not None:
        facts["best validation Dice during training"] = f"{info['best_val_dice_mean']:.3f} (mean foreground)"
    return facts
