"""The HTML report: one self-contained index.html a newcomer opens in a browser, even offline.

Images are embedded as base64 data URIs and the styling is inline CSS: no CDN, nothing to break
when the folder is zipped, mailed or opened years later. The only script is one line that counts
the pictures that loaded into ``<body data-images-loaded>`` (the browser test reads it); the page
needs no JavaScript to be read.
"""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from medseg.atomic import write_text
from medseg.report.overlay import class_colour

MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
# summary_table rows with these "class" values are aggregates, not classes, in the colour legend.
AGGREGATE_ROWS = {"mean", "all", "average", "overall", "total", "background"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; }
th { background: #f4f4f4; }
table.facts th { width: 12rem; }
tbody tr:nth-child(even) { background: #fafafa; }
img.curve { max-width: 100%; border: 1px solid #eee; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 1rem; }
figure { margin: 0; }
figure img { width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.85rem; color: #444; margin-top: 0.2rem; }
.legend { display: flex; flex-wrap: wrap; gap: 1.2rem; font-size: 0.9rem; margin: 0.5rem 0 1rem; }
.swatch { display: inline-block; width: 1.1em; height: 1.1em; vertical-align: -0.2em; margin-right: 0.3em; }
.contour { background: #333; border: 3px solid; box-sizing: border-box; }
.muted { color: #777; }
.stat { display: block; font-size: 0.75rem; color: #777; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.missed td, tr.spurious td { background: #fdecea; }
.note { font-size: 0.85rem; color: #555; max-width: 60rem; }
.cases { max-height: 32rem; overflow-y: auto; display: inline-block; border: 1px solid #eee; }
.cases table { margin: 0; }
.cases thead th { position: sticky; top: 0; }
h3 { font-size: 0.95rem; margin: 1.2rem 0 0.4rem; font-weight: 600; }
.grid3d { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
table.summary td { min-width: 8.5rem; }
pre.plan { background: #f7f7f7; padding: 0.6rem; font-size: 0.8rem; max-height: 24rem; overflow: auto; }
table.plan td.why { font-size: 0.85rem; color: #555; }
.warning { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.5rem 0.8rem; max-width: 60rem; }
"""
IMAGE_COUNTER = ("<script>addEventListener('load', () => { document.body.dataset.imagesLoaded = "
                 "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>")


def page(title: str, sections: list[str]) -> str:
    """A whole HTML document: inline CSS, the given section markup, the image counter."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n{IMAGE_COUNTER}\n</head>\n<body>\n"
        + "\n".join(sections)
        + '\n<p class="muted">Made by medseg.</p>\n</body>\n</html>\n'
    )


def write_report(
    out_dir: Path, *, title: str, summary_table: list[dict], curve_png: Path | None,
    overlays: list[tuple[str, Path]], facts: dict[str, str], class_names: list[str] | None = None,
) -> Path:
    """Write out_dir/index.html: title, facts, learning curve, metrics table, captioned overlays.

    overlays are (caption, png path) pairs. class_names (foreground classes, label 1 first) name
    the colour legend; when omitted they are taken from the summary rows' "class" column.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if class_names is None:
        class_names = [str(row["class"]) for row in summary_table
                       if "class" in row and str(row["class"]).strip().lower() not in AGGREGATE_ROWS]
    sections = [
        f"<h1>{escape(title)}</h1>",
        "<h2>Run</h2>", _facts_table(facts),
        "<h2>Learning curves</h2>",
        f'<img class="curve" src="{_data_uri(curve_png)}" alt="learning curves">' if curve_png
        else '<p class="muted">No training log for this run.</p>',
        "<h2>Metrics</h2>", _table(summary_table),
        "<h2>Predictions</h2>", _legend(class_names), _overlay_grid(overlays),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + '\n<p class="muted">Made by medseg.</p>\n</body>\n</html>\n'
    )
    index = out_dir / "index.html"
    write_text(index, page)
    return index


def data_uri(path: Path) -> str:
    """The file's bytes as a data: URI (public name of `_data_uri`)."""
    return _data_uri(path)


def _data_uri(path: Path) -> str:
    """The file's bytes as a data: URI, so the page carries its own pictures."""
    path = Path(path)
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _facts_table(facts: dict[str, str]) -> str:
    if not facts:
        return '<p class="muted">No run details recorded.</p>'
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in facts.items())
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _table(rows: list[dict]) -> str:
    """A table with one column per key seen in any row, in first-seen order; missing cells stay blank."""
    if not rows:
        return '<p class="muted">No metrics.</p>'
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _legend(class_names: list[str]) -> str:
    """What the overlay colours mean: one colour per class, filled where predicted and outlined
    where the reference (ground truth) has it."""
    items = [
        f'<span class="legend-class"><span class="swatch contour" style="border-color: {_css_rgb(class_colour(i))}; '
        f'background: {_css_rgb(_tint(class_colour(i)))}"></span>{escape(name)}</span>'
        for i, name in enumerate(class_names, start=1)
    ]
    if not items:
        items = ['<span>one colour per class</span>']
    items.append("<span>fill: prediction · outline: reference (ground truth), in the class's colour</span>")
    return f'<div class="legend">{"".join(items)}</div>'


def _tint(colour: tuple[int, int, int], alpha: float = 0.35) -> tuple[int, int, int]:
    """The fill colour of a class on a dark grey background, as the overlays blend it."""
    return tuple(round((1 - alpha) * 51 + alpha * c) for c in colour)  # type: ignore[return-value]


def _overlay_grid(overlays: list[tuple[str, Path]]) -> str:
    if not overlays:
        return '<p class="muted">No overlays.</p>'
    figures = "".join(
        f'<figure><img src="{_data_uri(path)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for caption, path in overlays
    )
    return f'<div class="grid">{figures}</div>'


def _css_rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*colour)
