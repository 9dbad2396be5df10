"""The browser page and the niivue library it uses.

niivue is not copied into this repository: `make install` (or `make niivue`) installs the npm
package ``@niivue/niivue`` at a pinned version into ``<venv>/niivue`` (NIIVUE_DIR), and the
server serves its self-contained ES module bundle (``dist/index.js``) at ``/niivue.js``.
``$MEDSEG_NIIVUE`` may name another installation (the package folder or the bundle file). When
it is missing, the page says how to install it; the API works regardless.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
NIIVUE_VERSION = "0.69.0"
NIIVUE_DIR = Path(sys.prefix) / "niivue"
BUNDLE = Path("dist") / "index.js"


def niivue_bundle() -> Path | None:
    """The installed niivue ES module bundle, or None."""
    env = os.environ.get("MEDSEG_NIIVUE")
    candidates = []
    if env:
        candidates += [Path(env), Path(env) / BUNDLE]
    candidates.append(NIIVUE_DIR / "node_modules" / "@niivue" / "niivue" / BUNDLE)
    return next((c for c in candidates if c.is_file()), None)


def page_html() -> str:
    """index.html, telling the script whether niivue is there and how to install it if not."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    hint = ("" if niivue_bundle() else
            f"The 3D viewer needs niivue: run `make install` in the medseg checkout, or `npm install --no-save "
            f"--prefix {NIIVUE_DIR} @niivue/niivue@{NIIVUE_VERSION}`, then reload. The API works without it.")
    return html.replace("{{NIIVUE_MISSING}}", hint)
