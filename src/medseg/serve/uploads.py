"""Uploads: the multipart body streamed to disk under a size limit, the file's type from its
name's suffix only (the name itself is never a path), and zipped DICOM series unpacked safely.

Why parse the multipart stream here: a framework's form parser reads the whole body (into memory
or a temporary file) before the handler sees it, so a 50 GB upload would fill the disk before
the limit could refuse it. Here every chunk is counted as it arrives and written straight into
the job's folder, and the request is refused (413) the moment the limit is passed.

A zip is unpacked without using its member names: members go to ``series/00000``,
``series/00001`` ... (DICOM slices are ordered by their headers, not their names), so no name
(``../../etc/passwd``, an absolute path, a symlink) can place a file anywhere else. Members are
limited in number and in unpacked bytes, counted while writing (the sizes a zip declares can lie),
and a member that expands more than `MAX_RATIO` times is refused as a zip bomb.
"""
from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from ..io.registry import match_suffix

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ZIP_SUFFIX = ".zip"
MAX_MEMBERS = 10_000
MAX_RATIO = 200          # a member expanding more than this is a zip bomb, not a DICOM slice
FIELD_LIMIT = 1024       # bytes of a non-file form field (the model name)
SKIPPED_MEMBERS = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|DICOMDIR$|Thumbs\.db$)", re.IGNORECASE)


class UploadRefused(Exception):
    """An upload the server will not take: `status` (400, 413, 415, 422) and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    """What a job was given: the file as stored, the name the client sent (display only), the
    suffix that decided its type, and the form fields."""

    path: Path
    client_name: str
    suffix: str
    fields: dict[str, str]
    size: int


def display_name(name: str | None) -> str:
    """The client's file name cut to its last component and to safe characters, for messages
    and download names only."""
    base = re.split(r"[\\/]", name or "")[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:120]
    return safe or "upload"


def upload_suffix(name: str) -> str:
    """The type of an upload from its name's ending, or 415 naming what is accepted."""
    lowered = name.lower()
    if lowered.endswith(ZIP_SUFFIX):
        return ZIP_SUFFIX
    suffix = match_suffix(Path(lowered))
    if suffix in IMAGE_SUFFIXES:
        return suffix
    if suffix in (".mhd", ".nhdr"):
        raise UploadRefused(415, f"{display_name(name)}: a header with a separate data file cannot be uploaded "
                            "alone; convert it to .mha or .nrrd (one file)")
    raise UploadRefused(415, f"{display_name(name)}: not a supported file type (accepted: "
                        f"{', '.join(IMAGE_SUFFIXES)}, or {ZIP_SUFFIX} holding one DICOM series)")


async def receive_upload(headers, body: AsyncIterator[bytes], folder: Path, limit: int) -> Upload:
    """Stream a multipart/form-data body into `folder`: its `file` part to ``folder/upload<suffix>``
    (named by the server), other fields kept as short strings. Raises UploadRefused."""
    ctype, params = parse_options_header(headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRefused(415, "send the file as multipart/form-data with a part named 'file'")
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise UploadRefused(413, f"the upload ({int(declared) / 2**20:.1f} MB) is over this server's limit of "
                            f"{limit / 2**20:.0f} MB")
    state = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None, "sink": None,
             "text": bytearray(), "size": 0, "error": None, "path": None, "suffix": None}
    fields: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)

    def header_field(data, start, end):
        state["field"] += data[start:end]

    def header_value(data, start, end):
        state["value"] += data[start:end]

    def header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def headers_finished():
        _, disp = parse_options_header(state["headers"].get("content-disposition", ""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        state["filename"] = None if filename is None else filename.decode("utf-8", "replace")
        if state["name"] == "file":
            if state["path"] is not None:
                raise UploadRefused(400, "send one part named 'file' per job")
            state["suffix"] = upload_suffix(state["filename"] or "")
            state["path"] = folder / f"upload{state['suffix']}"
            state["sink"] = open(state["path"], "wb")

    def part_data(data, start, end):
        if state["sink"] is not None:
            state["size"] += end - start
            if state["size"] > limit:
                raise UploadRefused(413, f"the upload is over this server's limit of {limit / 2**20:.0f} MB")
            state["sink"].write(data[start:end])
        else:
            state["text"] += data[start:end]
            if len(state["text"]) > FIELD_LIMIT:
                raise UploadRefused(400, f"form field {state['name']!r} is too long")

    def part_end():
        if state["sink"] is not None:
            state["sink"].close()
            state["sink"] = None
        elif state["name"]:
            fields[state["name"]] = state["text"].decode("utf-8", "replace")
        state["headers"], state["text"] = {}, bytearray()

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": header_field, "on_header_value": header_value, "on_header_end": header_end,
        "on_headers_finished": headers_finished, "on_part_data": part_data, "on_part_end": part_end})
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except UploadRefused:
        raise
    except Exception as exc:  # a malformed body: the parser's own words
        raise UploadRefused(400, f"malformed multipart body ({exc})") from exc
    finally:
        if state["sink"] is not None:
            state["sink"].close()
    if state["path"] is None:
        raise UploadRefused(400, "no part named 'file' in the form")
    if state["size"] == 0:
        raise UploadRefused(422, f"{display_name(state['filename'])}: the file is empty (0 bytes)")
    return Upload(state["path"], display_name(state["filename"]), state["suffix"], fields, state["size"])


def unpack_series(archive: Path, folder: Path, limit: int, shown: str) -> Path:
    """Unpack a zipped DICOM series into ``folder/series`` (members renamed 00000, 00001 ...,
    folders, hidden files, __MACOSX and DICOMDIR skipped); returns that folder. Raises
    UploadRefused (422) for a broken zip, links, too many members or too many bytes."""
    target = folder / "series"
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRefused(422, f"{shown}: not a readable zip file ({exc})") from exc
    total = 0
    count = 0
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise UploadRefused(422, f"{shown}: holds {len(members)} entries (at most {MAX_MEMBERS})")
        for info in members:
            if info.is_dir() or SKIPPED_MEMBERS.search(info.filename):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UploadRefused(422, f"{shown}: holds a symbolic link ({display_name(info.filename)}); "
                                    "zip the DICOM files themselves")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                raise UploadRefused(422, f"{shown}: an entry expands {info.file_size // info.compress_size}x "
                                    "(a zip bomb?); refused")
            out = target / f"{count:05d}"
            count += 1
            written = 0
            try:
                with zf.open(info) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        total += len(chunk)
                        if total > limit:
                            raise UploadRefused(422, f"{shown}: unpacks to more than {limit / 2**20:.0f} MB; refused")
                        if info.compress_size and written > MAX_RATIO * info.compress_size + (1 << 20):
                            raise UploadRefused(422, f"{shown}: an entry expands more than {MAX_RATIO}x (a zip "
                                                "bomb?); refused")
                        dst.write(chunk)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise UploadRefused(422, f"{shown}: a damaged or encrypted zip entry ({exc})") from exc
    if count == 0:
        raise UploadRefused(422, f"{shown}: the zip holds no files")
    return target
