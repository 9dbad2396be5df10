"""The sections of the run report's HTML page, each drawn from what the run folder holds."""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..io import describe_dataset, read_mask
from ..io.dataset import read_case
from ..io.labels import LabelMapping
from ..io.registry import case_stem
from ..runs import run_label_suffix
from .html import _legend, data_uri
from .overlay import overlay, structure_centre, volume_overlay

# (metric, column title, decimals) of the summary table
SUMMARY_COLUMNS = (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("precision", "Precision", 3),
                   ("sensitivity", "Sensitivity", 3), ("specificity", "Specificity", 3),
                   ("hd95", "HD95 mm", 2), ("assd", "ASSD mm", 2), ("nsd", "NSD", 3), ("rvd", "RVD", 3),
                   ("ref_volume", "Volume", 2), ("lesion_f1", "Lesion F1", 3))
MAX_CASE_ROWS = 300
MAX_OVERLAY_SIDE = 512  # 2D overlays are shrunk to this for the page (Kvasir images are ~1000 px)



def image_tag(path: Path | None, alt: str, css: str) -> str:
    return f'<img class="{css}" src="{data_uri(path)}" alt="{escape(alt)}">' if path else ""


def facts_table(facts: dict) -> str:
    if not facts:
        return '<p class="muted">Not recorded.</p>'
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in facts.items())
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summary_section(evaluation: dict, class_names: list[str], n_cases: int) -> str:
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


def cases_section(ranked: list[dict], class_names: list[str], unit: str = "mm") -> str:
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


def pick_overlays(info: dict, val_dir: Path, ranked: list[dict], tmp: Path) -> list[dict]:
    """Best, median and worst case pictures: [{tag, case, score, panels: [(caption, png)]}]."""
    picks, seen = [], set()
    for tag, item in (("worst", ranked[0]), ("best", ranked[-1]), ("median", ranked[len(ranked) // 2])):
        if item["case"] not in seen:  # fewer than three cases: each shown once, worst and best first
            seen.add(item["case"])
            picks.append((tag, item))
    picks.sort(key=lambda p: ("worst", "median", "best").index(p[0]))
    pairs, dataset = describe_dataset(Path(info["data"]), label_suffix=run_label_suffix(info))
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
    ref = np.asarray(case.label).astype(np.int64)
    if ref.ndim == 2:
        image, ref2, pred2 = _shrink(np.asarray(case.image), ref, pred)
        path = stem.with_suffix(".png")
        with atomic_path(path) as tmp:
            Image.fromarray(overlay(image, pred2, ref2)).save(tmp, format="PNG")
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
        picture = volume_overlay(case.image, pred, ref, spacing=tuple(case.spacing), centre=centre)
        with atomic_path(path) as tmp:
            Image.fromarray(picture).save(tmp, format="PNG")
        panels.append((f"{caption} (axial · coronal · sagittal)", path))
    return panels


def _shrink(image: np.ndarray, ref: np.ndarray, pred: np.ndarray):
    """Image (C, H, W) and masks at most MAX_OVERLAY_SIDE pixels on the longer side."""
    h, w = ref.shape
    scale = MAX_OVERLAY_SIDE / max(h, w)
    if scale >= 1:
        return image, ref, pred
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [np.asarray(Image.fromarray(c.astype(np.float32)).resize(size, Image.BILINEAR)) for c in image]
    small = lambda m: np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST)).astype(np.int64)  # noqa: E731
    return np.stack(channels), small(ref), small(pred)


def overlay_section(overlays: list[dict], class_names: list[str], info: dict) -> str:
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
    return data_uri(path)


def tensorboard_note(run: Path) -> str:
    if (run / "tensorboard").is_dir():
        return (f'<p class="note">Scalars are also in TensorBoard: <code>tensorboard --logdir '
                f"{escape(str(run / 'tensorboard'))}</code></p>")
    return ""


def data_facts(info: dict) -> dict:
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


def model_facts(info: dict, cost: dict) -> dict:
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


def postprocessing_note(spec: dict | None, record: dict) -> str:
    """One line under the validation metrics: per class, the postprocessing `medseg predict`
    applies (chosen on these cases, RUN/postprocessing.json) with Dice before and after, and
    whether the metrics and pictures are after it (validation.json "postprocessing")."""
    evidence = (spec or {}).get("evidence") or []
    if not evidence:
        return ""
    chosen = list((spec or {}).get("largest_component_classes", []))
    parts = "; ".join(
        f"{escape(str(e['name']))}: "
        + (f"largest component kept, Dice {e['dice_before']:.3f} before, {e['dice_after']:.3f} after"
           if e["applied"] else f"not used (Dice {e['dice_before']:.3f}, {e['dice_after']:.3f} with it)")
        for e in evidence)
    if chosen and record.get("postprocessing") != chosen:
        lead = ("<b>Before postprocessing:</b> these metrics and pictures are of the masks as predicted, before "
                "the postprocessing <code>medseg predict</code> applies (chosen on these cases)")
    elif chosen:
        lead = ("<b>After postprocessing:</b> these metrics, box plots and pictures are of the masks "
                "<code>medseg predict</code> gives, after the postprocessing chosen on these cases")
    else:
        lead = ("<b>No postprocessing:</b> keeping only the largest component raised no class's Dice on these "
                "cases, so <code>medseg predict</code> applies none")
    return f'<p class="note">{lead}. {parts}.</p>'


def starvation_warning(info: dict) -> str:
    """A visible warning for a timed run that got under half the steps the plan expected
    (run.json "starved"): its results say more about the machine's load than about the method."""
    if not info.get("starved"):
        return ""
    done, expected = int(info.get("iterations_done") or 0), int(info["steps_expected"])
    minutes = (info.get("config") or {}).get("minutes")
    return (f'<p class="warning"><b>Training was starved:</b> {done:,} steps'
            + (f" in {minutes:g} min" if minutes else "")
            + f" where the plan expected ~{expected:,} on this machine ({done / max(expected, 1):.0%}). The machine was "
            "busy or slower than planned, so the model is undertrained: these results are worse than the same "
            "settings give on an idle machine. Train again with more <code>--minutes</code>, on an idle machine, "
            "or with <code>--epochs</code> for a fixed number of steps.</p>")


def time_facts(info: dict, record: dict, report_s: float) -> dict:
    facts = {}
    if info.get("elapsed_s") is not None:
        facts["training"] = (f"{info['elapsed_s'] / 60:.1f} min, {info.get('epochs_done', '?')} epochs, "
                             f"{info.get('iterations_done', '?')} iterations on {info.get('device', '?')} "
                             f"({info.get('precision', '?')})" + ("" if info.get("finished") else ", not finished"))
    if info.get("steps_expected"):
        done, expected = int(info.get("iterations_done") or 0), int(info["steps_expected"])
        facts["steps expected"] = (f"~{expected:,} in the run's minutes, by the plan's estimate for this machine; "
                                   f"{done:,} done ({done / expected:.0%})"
                                   + (": starved (under half)" if info.get("starved") else ""))
    if record.get("predict_s") is not None:
        facts["validation prediction"] = f"{record['predict_s']:.1f} s for {record.get('cases', '?')} cases"
    if record.get("evaluate_s") is not None:
        facts["evaluation (all metrics)"] = f"{record['evaluate_s']:.1f} s"
    facts["this report"] = f"{report_s:.1f} s"
    if info.get("best_val_dice_mean") is not None:
        facts["best validation Dice during training"] = f"{info['best_val_dice_mean']:.3f} (mean foreground)"
    return facts
