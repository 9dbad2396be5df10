"""Headless Chromium: render a report the way a reader's browser does (tests and docs screenshots).

Uses the system's ``chromium`` (Debian's package) with the flags that keep it from reaching the
network: on a closed network Chromium otherwise waits on background requests and hangs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str | None:
    """Path of a Chromium executable ($MEDSEG_CHROMIUM first), or None."""
    env = os.environ.get("MEDSEG_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium found (apt-get install chromium, or set MEDSEG_CHROMIUM)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


def rendered_dom(html: str | os.PathLike, timeout: float = 60) -> str:
    """The DOM after the page loaded (scripts run), as Chromium serialises it."""
    uri = Path(html).resolve().as_uri()
    done = _run(["--virtual-time-budget=10000", "--dump-dom", uri], timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium could not render {html}: {done.stderr[-800:]}")
    return done.stdout


def images_loaded(dom: str) -> int | None:
    """The count the page's script stored in ``<body data-images-loaded>``, or None."""
    found = re.search(r'data-images-loaded="(\d+)"', dom)
    return int(found.group(1)) if found else None


def screenshot(html: str | os.PathLike, png: str | os.PathLike, width: int = 1200, height: int = 3000,
               timeout: float = 60) -> Path:
    """A width x height PNG of the page (height: how much of a long page to capture)."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run([f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={png}",
                 Path(html).resolve().as_uri()], timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {html}: {done.stderr[-800:]}")
    return png
