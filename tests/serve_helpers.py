"""A `medseg serve` subprocess on 127.0.0.1 with an authorised client (tests/serve, benchmarks)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `medseg serve` subprocess and an authorised client for it."""

    def __init__(self, runs: list[Path], work: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        env = dict(os.environ, MEDSEG_SERVE_TOKEN=TOKEN, OMP_NUM_THREADS="1")
        self.log = open(work.parent / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "medseg", "serve", *map(str, runs), "--port",
                                      str(self.port), "--device", "cpu", "--work-dir", str(work), *args],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"medseg serve exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("medseg serve did not answer within 120 s")

    def submit(self, path: Path, model: str, name: str | None = None) -> httpx.Response:
        with open(path, "rb") as f:
            return self.client.post("/api/v1/jobs", files={"file": (name or path.name, f)}, data={"model": model})

    def wait(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished in {timeout} s")

    def stop(self, sig_timeout: float = 120) -> int:
        self.client.close()
        self.proc.terminate()
        try:
            code = self.proc.wait(sig_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code
