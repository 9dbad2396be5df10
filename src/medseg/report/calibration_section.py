"""The report's calibration and uncertainty section, drawn from RUN/calibration.json and the
maps in RUN/validation/uncertainty/ (`medseg.training.calibrate` writes both): the reliability
diagram before and after temperature scaling, ECE before and after, the uncertainty heat maps of
the best, median and worst validation cases, and the cases flagged as likely wrong."""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..atomic import atomic_path
from ..runs import read_calibration
from .html import data_uri

MAX_FLAGGED_ROWS = 50


def plot_reliability(record: dict, out_png: Path) -> Path | None:
    """Reliability diagram: per confidence bin, the share of voxels predicted right (bars)
    against the diagonal of perfect calibration, before and after; None without bins."""
    panels = [(name, record.get(f"reliability_{name}"), record.get(f"ece_{name}")) for name in ("before", "after")]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = Figure(figsize=(3.4 * len(panels) + 0.4, 3.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (name, table, ece) in zip(axes, panels):
        edges = np.asarray(table["edges"], float)
        width = np.diff(edges)
        acc = np.array([np.nan if a is None else a for a in table["accuracy"]], float)
        conf = np.array([np.nan if c is None else c for c in table["confidence"]], float)
        ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color="#4c72b0", edgecolor="white",
               label="accuracy")
        ax.bar(edges[:-1], np.nan_to_num(conf - acc), bottom=np.nan_to_num(acc), width=width, align="edge",
               color="#dd8452", alpha=0.45, edgecolor="white", label="gap to confidence")
        ax.plot([0, 1], [0, 1], color="black", lw=1, ls="--")
        title = "before" if name == "before" else f"after (T = {_temperature(record)})"
        ax.set_title(f"{title}\nECE {ece:.4f}" if ece is not None and math.isfinite(ece) else title, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (predicted class)")
    axes[0].set_ylabel("share of voxels right")
    axes[0].legend(loc="upper left", fontsize=8)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out_png


def _temperature(record: dict) -> str:
    t = record.get("temperature")
    return ", ".join(f"{v:.2f}" for v in t) if isinstance(t, list) else f"{float(t):.2f}" if t is not None else "-"


def _num(value, digits: int = 4) -> str:
    return "-" if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) \
        else f"{value:.{digits}f}"


def calibration_section(run: Path, tmp: Path) -> str:
    """HTML of the section (a note when the run has no calibration yet)."""
    record = read_calibration(run)
    if not record:
        return ('<p class="muted">No calibration for this run (RUN/calibration.json): `medseg report RUN` '
                'fits it on the validation cases when the run folder is writable.</p>')
    facts = {
        "Temperature": f"{_temperature(record)} ({'one per class' if record.get('per_class') else 'one per run'})",
        "Why this temperature": (record.get("fit") or {}).get("choice", "-"),  # judged on held-out validation cases
        f"ECE before / after ({record.get('ece_bins', 15)} bins)":
            f"{_num(record.get('ece_before'))} / {_num(record.get('ece_after'))}",
        "Voxels judged": f"{record.get('voxels', '-')} ({record.get('voxels') and 'sampled from the ' or ''}"
                         "foreground-relevant region of the validation cases)",
        "Entropy AUROC for a wrong voxel": _num(record.get("entropy_auroc_wrong_voxel_after"), 3),
        "Spearman: case score vs Dice": _num(record.get("case_score_spearman_dice"), 3),
        "Flag threshold (case score)": f"{_num(record.get('flag_threshold'))}: {record.get('flag_rule', '')}",
    }
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts.items())
    parts = [f'<table class="facts"><tbody>{rows}</tbody></table>']
    diagram = plot_reliability(record, tmp / "reliability.png")
    if diagram:
        parts.append(f'<img class="curve" src="{data_uri(diagram)}" alt="reliability diagram before and after">')
    parts.append(_maps(run, record.get("maps") or {}))
    parts.append(_flagged(record.get("cases") or []))
    return "".join(parts)


def _maps(run: Path, maps: dict) -> str:
    cells, seen = [], set()
    for label in ("best", "median", "worst"):
        entry = maps.get(label)
        picture = run / "validation" / entry["picture"] if entry else None
        if picture is None or not picture.is_file() or entry["case"] in seen:  # few cases: one may be two
            continue
        seen.add(entry["case"])
        cells.append(f'<figure><img class="overlay" src="{data_uri(picture)}" alt="uncertainty of {escape(label)}">'
                     f'<figcaption>{escape(label)}: {escape(entry["case"])}, Dice {_num(entry.get("dice"), 3)}, '
                     f'score {_num(entry.get("score"))}</figcaption></figure>')
    if not cells:
        return ""
    return ('<h3>Uncertainty (entropy) of the best, median and worst validation cases</h3>'
            '<p class="muted">Dark: certain; bright: doubtful (up to log K nats); outlines: the predicted mask.</p>'
            f'<div class="overlays">{"".join(cells)}</div>')


def _flagged(cases: list[dict]) -> str:
    flagged = sorted((c for c in cases if c.get("flagged")), key=lambda c: -float(c.get("score", 0)))
    if not flagged:
        return "<h3>Flagged validation cases</h3><p class=\"muted\">None.</p>"
    body = "".join(f"<tr><td>{escape(str(c['case']))}</td><td>{_num(c.get('score'))}</td>"
                   f"<td>{_num(c.get('dice'), 3)}</td></tr>" for c in flagged[:MAX_FLAGGED_ROWS])
    more = f'<p class="muted">{len(flagged) - MAX_FLAGGED_ROWS} more.</p>' if len(flagged) > MAX_FLAGGED_ROWS else ""
    return (f"<h3>Flagged validation cases ({len(flagged)} of {len(cases)})</h3>"
            f"<table><thead><tr><th>Case</th><th>Score</th><th>Dice</th></tr></thead><tbody>{body}</tbody></table>"
            + more)
