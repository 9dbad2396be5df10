"""The settings of one `medseg serve` process, in one frozen record (the CLI's flags)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServeSettings:
    """What the server serves and its limits. Defaults suit a small group on one machine:
    loopback only, CORS off, uploads up to 1 GiB, 16 jobs waiting, results kept an hour."""

    runs: tuple[Path, ...]
    token: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1                   # prediction processes, each holding every model once
    device: str = "auto"
    max_upload_mb: float = 1024.0      # one upload (HTTP 413 beyond)
    max_unpacked_mb: float = 4096.0    # a zipped DICOM series, unpacked (a zip bomb is refused)
    queue_size: int = 16               # jobs waiting for a worker (HTTP 429 beyond)
    keep_minutes: float = 60.0         # finished jobs are removed this long after they end
    work_dir: Path | None = None       # None: a private temporary folder, removed at exit
    cors_origins: tuple[str, ...] = ()  # browsers on other origins may call the API (off by default)
    grace_seconds: float = 120.0       # at shutdown, running jobs get this long to finish
    uncertainty: bool = True           # entropy map beside every mask (the viewer's second overlay)
    extra: dict = field(default_factory=dict)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * 1024 * 1024)
