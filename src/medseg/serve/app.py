"""The HTTP routes (FastAPI). The contract other programs rely on (extend, never rename):

    GET  /healthz                          no token: {"status": "ok", ...}
    GET  /api/v1/models                    [{name, classes, dimensions, channels, plan}]
    POST /api/v1/jobs                      multipart `file` (+ optional `model`) -> 202 {"id"}
    GET  /api/v1/jobs/{id}                 {status: queued|running|done|failed, progress, stage, error, ...}
    GET  /api/v1/jobs/{id}/mask            the mask in the input's format and geometry
    GET  /api/v1/jobs/{id}/statistics      per-class size (ml / mm2 / pixels), pieces, box, intensities
    GET  /api/v1/jobs/{id}/uncertainty     entropy map (NIfTI, the viewer's grid), where computed
    GET  /api/v1/jobs/{id}/image, /overlay the image and the mask as NIfTI for the viewer
    DELETE /api/v1/jobs/{id}               204; the job and its files are gone

Every /api/ call needs the bearer token (401). Uploads: 413 over the size limit, 415 a type not
accepted, 422 an image the model cannot take (the same checks and words as `medseg predict`,
with the client's file name), 429 with Retry-After when the queue is full, 503 while shutting down.
"""
from __future__ import annotations

import asyncio
import json
import re
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..errors import MedsegInputError
from ..inference.predict import check_input, output_suffix
from ..io.layout import InputCase, prediction_inputs
from .auth import require_token
from .dispatch import Dispatcher
from .jobs import Job, JobStore
from .models import ServedModel
from .page import STATIC, niivue_bundle, page_html
from .settings import ServeSettings
from .uploads import UploadRefused, receive_upload, unpack_series, upload_suffix
from .workers import read_progress

API = "/api/v1"
MEDIA = {".nii.gz": "application/gzip", ".nii": "application/octet-stream", ".png": "image/png",
         ".nrrd": "application/octet-stream", ".mha": "application/octet-stream", ".tiff": "image/tiff",
         ".tif": "image/tiff"}


def _check_case(model: ServedModel, path: Path, dicom_folder: Path | None, shown: str) -> tuple[InputCase, str]:
    """The upload as `medseg predict` would take it, checked as it checks it (in a thread)."""
    try:
        source = dicom_folder or path
        items = prediction_inputs(source, model.in_channels, model.channel_names)
        if len(items) != 1:
            raise MedsegInputError(source, f"holds {len(items)} cases; upload one per job")
        item = items[0]
        check_input(item, model.in_channels, model.spatial_dims)
    except MedsegInputError as err:
        problem = err.problem.replace(str(path), shown).replace(str(path.parent), "the upload")
        raise UploadRefused(422, f"{shown}: {problem}") from err  # the server's folders stay private
    return InputCase("case", item.files, item.dicom), output_suffix(item, None)


def create_app(settings: ServeSettings, models: dict[str, ServedModel], work: Path) -> FastAPI:
    store = JobStore(work, settings.queue_size, settings.keep_minutes * 60)
    dispatcher = Dispatcher(store, {n: str(m.path) for n, m in models.items()}, settings.workers, settings.device,
                            settings.uncertainty)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        dispatcher.start()

        async def expire_loop():
            while True:
                await asyncio.sleep(max(0.5, min(60.0, settings.keep_minutes * 60 / 4)))
                store.expire()
        expiry = asyncio.create_task(expire_loop())
        yield
        expiry.cancel()
        await dispatcher.close(settings.grace_seconds)

    app = FastAPI(title="medseg serve", version="1", lifespan=lifespan,
                  description="Segment images with trained medseg runs. Every /api/ call needs "
                  "`Authorization: Bearer TOKEN`.")
    app.state.settings, app.state.store, app.state.dispatcher = settings, store, dispatcher
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    auth = [Depends(require_token)]

    @app.exception_handler(UploadRefused)
    async def refused(request: Request, exc: UploadRefused):
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.get("/healthz")
    async def healthz():
        return {"status": "shutting down" if dispatcher.closing else "ok", "models": len(models),
                "queued": store.waiting(), "workers": dispatcher.workers}

    @app.get(f"{API}/models", dependencies=auth)
    async def list_models():
        return [m.public() for m in models.values()]

    @app.post(f"{API}/jobs", dependencies=auth, status_code=202, openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "model": {"type": "string"}}}}}}})
    async def submit(request: Request):
        """Upload one image, volume or zipped DICOM series; returns the job id at once."""
        if dispatcher.closing:
            raise HTTPException(503, "the server is shutting down")
        if not store.has_room():
            return JSONResponse({"detail": f"the queue is full ({settings.queue_size} jobs waiting); try again later"},
                                status_code=429, headers={"Retry-After": str(dispatcher.retry_after())})
        store.reserved += 1
        job_id = store.new_id()
        folder = store.folder(job_id)
        try:
            upload = await receive_upload(request.headers, request.stream(), folder, settings.max_upload_bytes)
            name = upload.fields.get("model") or next(iter(models))
            if name not in models:
                raise UploadRefused(404, f"no model named {name!r} (served: {', '.join(models)})")
            series = None
            if upload.suffix == ".zip":
                series = await run_in_threadpool(unpack_series, upload.path, folder, settings.max_unpacked_bytes,
                                                 upload.client_name)
            item, suffix = await run_in_threadpool(_check_case, models[name], upload.path, series, upload.client_name)
        except BaseException:
            store.discard_folder(job_id)
            raise
        finally:
            store.reserved -= 1
        job = Job(id=job_id, model=name, input_name=upload.client_name, suffix=suffix)
        store.add(job)
        dispatcher.submit(job, item)
        return {"id": job_id, "status": job.status}

    def _job(job_id: str) -> Job:
        job = store.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (never made, deleted, or expired)")
        return job

    @app.get(f"{API}/jobs/{{job_id}}", dependencies=auth)
    async def status(job_id: str):
        job = _job(job_id)
        out = job.public()
        if job.status == "running":
            out.update(read_progress(store.folder(job_id)) or {})
        return out

    def _result(job_id: str, key: str) -> tuple[Job, Path]:
        job = _job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}" + (f": {job.error}" if job.error else ""))
        if key not in job.outputs:
            raise HTTPException(404, f"job {job_id} has no {key} (the server was started without it)")
        return job, store.result(job) / job.outputs[key]

    @app.get(f"{API}/jobs/{{job_id}}/mask", dependencies=auth)
    async def mask(job_id: str):
        job, path = _result(job_id, "mask")
        stem = re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", "", job.input_name) or "upload"
        return FileResponse(path, media_type=MEDIA.get(job.suffix, "application/octet-stream"),
                            filename=f"{stem}_mask{job.suffix}")

    @app.get(f"{API}/jobs/{{job_id}}/statistics", dependencies=auth)
    async def statistics(job_id: str):
        _, path = _result(job_id, "statistics")
        return json.loads(path.read_text(encoding="utf-8"))

    for key in ("image", "overlay", "uncertainty"):
        def viewer_file(job_id: str, key: str = key):
            _, path = _result(job_id, key)
            return FileResponse(path, media_type="application/gzip", filename=f"{key}.nii.gz")
        app.get(f"{API}/jobs/{{job_id}}/{key}", dependencies=auth, name=f"job_{key}",
                summary=f"the job's {key} as NIfTI for the viewer")(viewer_file)

    @app.delete(f"{API}/jobs/{{job_id}}", dependencies=auth, status_code=204)
    async def delete(job_id: str):
        _job(job_id)
        store.remove(job_id)
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    async def index():
        return Response(page_html(), media_type="text/html")

    @app.get("/niivue.js", include_in_schema=False)
    async def niivue():
        bundle = niivue_bundle()
        if bundle is None:
            return Response("// niivue is not installed: run `make install` (or `make niivue`)",
                            status_code=404, media_type="text/javascript")
        return FileResponse(bundle, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
