"""The job store: one folder per job, a bounded queue, and expiry.

    WORK/jobs/<id>/job.json        the record (status, progress, error, times): written atomically
    WORK/jobs/<id>/upload<suffix>  the upload as received (a zip: unpacked into series/)
    WORK/jobs/<id>/result/         the outputs, renamed into place whole by the worker

Status runs queued -> running -> done | failed. A result folder appears only by one rename of a
finished folder, so nothing half-written is ever served. Jobs whose record says queued or
running when a server starts on the same work folder were interrupted by a stop: they are marked
failed with that reason. Finished jobs are removed `keep_minutes` after they ended.
"""
from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_text

JOBS = "jobs"
RECORD = "job.json"
RESULT = "result"
ACTIVE = ("queued", "running")


@dataclass
class Job:
    """One prediction request and where it stands."""

    id: str
    model: str
    input_name: str          # the client's file name, made safe (display and download names only)
    suffix: str              # the mask's file suffix (the input's format)
    status: str = "queued"
    progress: float = 0.0
    stage: str = "waiting for a worker"
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    outputs: dict = field(default_factory=dict)  # name -> file in result/ (mask, image, uncertainty, ...)

    def public(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("suffix", "outputs")}
        out["results"] = sorted(self.outputs) if self.status == "done" else []
        return out


class JobStore:
    """Jobs by id, their folders under WORK/jobs, the queue bound and expiry."""

    def __init__(self, work: Path, queue_size: int, keep_seconds: float) -> None:
        self.root = Path(work) / JOBS
        self.root.mkdir(parents=True, exist_ok=True)
        self.queue_size = queue_size
        self.keep_seconds = keep_seconds
        self.jobs: dict[str, Job] = {}
        self.reserved = 0  # uploads in flight that hold a queue place
        self._reload()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def result(self, job: Job) -> Path:
        return self.folder(job.id) / RESULT

    def save(self, job: Job) -> None:
        write_text(self.folder(job.id) / RECORD, json.dumps(asdict(job), indent=1))

    def _reload(self) -> None:
        """Jobs an earlier server left in this work folder: finished ones are served again; ones
        it left queued or running are failed (their worker is gone)."""
        for record in sorted(self.root.glob(f"*/{RECORD}")):
            try:
                job = Job(**json.loads(record.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(record.parent, ignore_errors=True)
                continue
            if job.status in ACTIVE:
                job.status, job.error, job.finished = "failed", "the server stopped before this job finished", time.time()
                shutil.rmtree(self.folder(job.id) / RESULT, ignore_errors=True)
                self.save(job)
            self.jobs[job.id] = job
        for partial in self.root.glob("*/.result.partial*"):
            shutil.rmtree(partial, ignore_errors=True)

    def waiting(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "queued") + self.reserved

    def has_room(self) -> bool:
        return self.waiting() < self.queue_size

    def new_id(self) -> str:
        job_id = secrets.token_hex(8)
        self.folder(job_id).mkdir(parents=True)
        return job_id

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.save(job)

    def update(self, job: Job, **changes) -> None:
        for key, value in changes.items():
            setattr(job, key, value)
        if job.id in self.jobs:
            self.save(job)

    def remove(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def discard_folder(self, job_id: str) -> None:
        """Remove the folder of an upload that never became a job."""
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def expire(self, now: float | None = None) -> list[str]:
        """Remove finished jobs older than keep_seconds; returns their ids."""
        now = time.time() if now is None else now
        old = [j.id for j in self.jobs.values() if j.finished is not None and now - j.finished >= self.keep_seconds]
        for job_id in old:
            self.remove(job_id)
        return old
