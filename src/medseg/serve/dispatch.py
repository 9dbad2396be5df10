"""The queue between the API and the worker processes: jobs wait in an asyncio queue, one
dispatcher task per worker hands them out, and their outcome is written to the job store.
Shutdown: no new job is taken, running jobs get `grace_seconds` to finish, every job still
queued or unfinished is marked failed; a result folder exists only for a finished job."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..io.layout import InputCase
from .jobs import Job, JobStore
from .workers import failure_message, run_job, start_worker


class Dispatcher:
    """Worker processes and the tasks that feed them."""

    def __init__(self, store: JobStore, models: dict[str, str], workers: int, device: str, uncertainty: bool) -> None:
        self.store = store
        self.models = models
        self.workers = max(1, workers)
        self.device = device
        self.uncertainty = uncertainty
        self.queue: asyncio.Queue[tuple[str, InputCase]] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.pool: ProcessPoolExecutor | None = None
        self.closing = False
        self.seconds: list[float] = []  # recent job times, for Retry-After

    def _new_pool(self) -> ProcessPoolExecutor:
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=start_worker, initargs=(self.models, self.device, threads))

    def start(self) -> None:
        self.pool = self._new_pool()
        self.tasks = [asyncio.create_task(self._feed()) for _ in range(self.workers)]

    def submit(self, job: Job, item: InputCase) -> None:
        self.queue.put_nowait((job.id, item))

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: the recent mean job time x queue / workers."""
        mean = sum(self.seconds[-20:]) / len(self.seconds[-20:]) if self.seconds else 5.0
        return max(1, int(mean * max(1, self.store.waiting()) / self.workers + 0.5))

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job_id, item = await self.queue.get()
            job = self.store.jobs.get(job_id)
            if job is None or job.status != "queued":  # deleted while it waited
                continue
            self.store.update(job, status="running", started=time.time(), progress=0.05, stage="starting")
            try:
                outcome = await loop.run_in_executor(self.pool, run_job, str(self.store.folder(job_id)), job.model,
                                                     item, job.suffix, self.uncertainty)
            except asyncio.CancelledError:
                raise
            except BrokenProcessPool:
                self._finish(job_id, "failed", "the prediction worker stopped unexpectedly (out of memory?)")
                if not self.closing:
                    self.pool = self._new_pool()
                continue
            except Exception as exc:
                self._finish(job_id, "failed", failure_message(exc, job.input_name))
                continue
            self.seconds.append(outcome["seconds"])
            self._finish(job_id, "done", None, outcome["outputs"])

    def _finish(self, job_id: str, status: str, error: str | None, outputs: dict | None = None) -> None:
        job = self.store.jobs.get(job_id)
        if job is None:  # deleted while it ran: drop what it wrote
            self.store.discard_folder(job_id)
            return
        self.store.update(job, status=status, error=error, outputs=outputs or {}, finished=time.time(),
                          progress=1.0 if status == "done" else job.progress,
                          stage="done" if status == "done" else "failed")

    async def close(self, grace_seconds: float) -> None:
        """Stop taking jobs, let running ones finish within the grace time, fail the rest."""
        self.closing = True
        running = [j for j in self.store.jobs.values() if j.status == "running"]
        deadline = time.monotonic() + grace_seconds
        while running and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            running = [j for j in self.store.jobs.values() if j.status == "running"]
        for task in self.tasks:
            task.cancel()
        for job in list(self.store.jobs.values()):
            if job.status in ("queued", "running"):
                self.store.update(job, status="failed", finished=time.time(), stage="failed",
                                  error="the server shut down before this job finished")
        if self.pool is not None:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # only those still running past the grace time are left
                process.terminate()
