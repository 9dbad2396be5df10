"""Running the server: models described, a work folder, the token printed, uvicorn started on
the chosen address; the temporary work folder (uploads are patient data) removed at exit."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import uvicorn

from .app import create_app
from .models import served_models
from .settings import ServeSettings


def run_server(settings: ServeSettings, token_given: bool = True) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: running jobs finish within the grace time)."""
    holders: list = []
    models = served_models(list(settings.runs), holders)
    own = settings.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="medseg-serve-")) if own else Path(settings.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        app = create_app(settings, models, work)
        shown = "0.0.0.0 (every interface)" if settings.host in ("0.0.0.0", "::") else settings.host
        print(f"medseg serve: {len(models)} model(s): {', '.join(models)}; {settings.workers} worker(s); "
              f"listening on {shown}:{settings.port}", flush=True)
        print(f"open http://{settings.host}:{settings.port}/ ; API docs at /docs", flush=True)
        if not token_given:
            print(f"token: {settings.token}", flush=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                    timeout_graceful_shutdown=int(settings.grace_seconds) + 5)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
        for holder in holders:
            holder.cleanup()
