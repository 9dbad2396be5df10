"""`medseg serve`'s flags and start: beside cli.py so the command's file stays small; FastAPI,
uvicorn and torch load only when the command runs."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable


def add_serve_parser(sub, add_device: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("serve", help="HTTP API and browser viewer over trained runs",
                       description="Serves RUN(s) over HTTP: a page (upload, 3D viewer, volumes, download) and a "
                       "JSON API (/docs). Every /api/ call needs the bearer token, printed at start unless given "
                       "(--token or $MEDSEG_SERVE_TOKEN). Binds 127.0.0.1 unless told otherwise; docs/serve.md.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder, cross-validation folder or "
                   "model package to serve (named after its folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="bearer token clients must send (default: $MEDSEG_SERVE_TOKEN, else a new one, "
                   "printed); a token on the command line is visible to other users of the machine")
    p.add_argument("--workers", type=int, default=1, help="prediction processes, each holding the models (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest upload (default 1024 MB; 413 beyond)")
    p.add_argument("--max-unpacked-mb", type=float, default=4096.0, help="largest zipped DICOM series once "
                   "unpacked (default 4096 MB; refused beyond)")
    p.add_argument("--queue-size", type=int, default=16, help="jobs that may wait for a worker (default 16; 429 beyond)")
    p.add_argument("--keep-minutes", type=float, default=60.0, help="results are removed this long after a job "
                   "ends (default 60)")
    p.add_argument("--work-dir", type=Path, help="folder for uploads and results (default: a temporary folder "
                   "removed at exit); jobs there survive a restart")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="let pages from ORIGIN "
                   "call the API (repeatable; default: none)")
    p.add_argument("--no-uncertainty", action="store_true", help="skip the uncertainty map (slightly faster)")
    add_device(p)


def run_serve(args: argparse.Namespace) -> None:
    from .serve import ServeSettings, run_server
    from .serve.auth import new_token

    token = args.token or os.environ.get("MEDSEG_SERVE_TOKEN")
    run_server(ServeSettings(runs=tuple(args.runs), token=token or new_token(), host=args.host, port=args.port,
                             workers=args.workers, device=args.device, max_upload_mb=args.max_upload_mb,
                             max_unpacked_mb=args.max_unpacked_mb,
                             queue_size=args.queue_size, keep_minutes=args.keep_minutes, work_dir=args.work_dir,
                             cors_origins=tuple(args.cors_origin), uncertainty=not args.no_uncertainty),
               token_given=bool(token))
