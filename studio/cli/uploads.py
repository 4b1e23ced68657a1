"""Uploads of datasets: one streamed `POST /v1/files`, or the Uploads API in parts for big files.

Either way the file is read from disk as it is sent (memory stays flat) with a progress bar on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from studio.cli.client import ApiClient, ApiError
from studio.cli.output import err_console

DEFAULT_PART_BYTES = 32 * 1024**2
# An upload's body is sent, then validated before the answer (up to 32 MiB by default): allow for both.
UPLOAD_TIMEOUT_S = 600.0
PART_TRIES = 3


class SliceReader(io.RawIOBase):
    """`length` bytes of a file from `start`, as a seekable stream: one part of an upload.

    It has no `fileno()`, so httpx measures it by seeking (the slice's length, not the file's), and it
    reports bytes read (for the progress bar) and feeds a hash that restarts when httpx rewinds it.
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        start: int,
        length: int,
        on_read: Callable[[int], object],
        md5_before: hashlib._Hash | None = None,
    ) -> None:
        super().__init__()
        self._file = file
        self._start = start
        self._length = length
        self._position = 0
        self._on_read = on_read
        self._md5_before = md5_before or hashlib.md5(usedforsecurity=False)
        self.md5 = self._md5_before.copy()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        if self._position == 0:
            self.md5 = self._md5_before.copy()  # httpx rewinds before (re)sending the body
            self._on_read(0)
        return self._position

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._file.seek(self._start + self._position)
        chunk = self._file.read(size)
        self._position += len(chunk)
        self.md5.update(chunk)
        self._on_read(self._position)
        return chunk

    def readinto(self, buffer: Any) -> int:  # pragma: no cover - httpx calls read()
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def upload_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=err_console,
        transient=not err_console.is_terminal,
    )


def upload_whole(api: ApiClient, path: Path, *, model: str | None, progress: Progress) -> Any:
    """Upload `path` in one `POST /v1/files`, streamed from disk; return the file object.

    Raises:
        ApiError: the upload was refused or broke.
    """
    size = path.stat().st_size
    task = progress.add_task(path.name, total=size)
    with path.open("rb") as file:
        reader = SliceReader(
            file,
            start=0,
            length=size,
            on_read=lambda done: progress.update(task, completed=done),
        )
        data = {"purpose": "fine-tune"}
        if model:
            data["model"] = model
        response = api.request(
            "POST",
            "/v1/files",
            files={"file": (path.name, reader, "application/jsonl")},
            data=data,
            timeout_s=UPLOAD_TIMEOUT_S,
        )
    return response.json()


def _advance(progress: Progress, task: TaskID, start: int, done: int) -> None:
    progress.update(task, completed=start + done)


def upload_in_parts(api: ApiClient, path: Path, *, part_size: int, progress: Progress) -> Any:
    """Upload `path` through the Uploads API, `part_size` bytes a part, each part tried up to three
    times, with the whole file's MD5 checked by the server; return the file object.

    Raises:
        ApiError: the upload could not be created, a part failed three times, or completing it failed
            (the upload is then cancelled).
    """
    size = path.stat().st_size
    upload = api.post(
        "/v1/uploads",
        {"filename": path.name, "purpose": "fine-tune", "bytes": size, "mime_type": "application/jsonl"},
    )
    task = progress.add_task(path.name, total=size)
    md5 = hashlib.md5(usedforsecurity=False)
    part_ids: list[str] = []
    try:
        with path.open("rb") as file:
            for start in range(0, size, part_size):
                length = min(part_size, size - start)
                for attempt in range(1, PART_TRIES + 1):
                    reader = SliceReader(
                        file,
                        start=start,
                        length=length,
                        on_read=functools.partial(_advance, progress, task, start),
                        md5_before=md5,
                    )
                    try:
                        part = api.request(
                            "POST",
                            f"/v1/uploads/{upload['id']}/parts",
                            files={"data": (path.name, reader, "application/octet-stream")},
                            timeout_s=UPLOAD_TIMEOUT_S,
                        ).json()
                    except ApiError as exc:
                        retryable = exc.status is None or exc.status >= 500 or exc.status == 429
                        if attempt == PART_TRIES or not retryable:
                            raise
                        time.sleep(attempt)
                        continue
                    md5 = reader.md5
                    part_ids.append(part["id"])
                    break
        done = api.post(
            f"/v1/uploads/{upload['id']}/complete",
            {"part_ids": part_ids, "md5": md5.hexdigest()},
            timeout_s=UPLOAD_TIMEOUT_S,
        )
    except BaseException:
        # If this fails too, the upload expires by itself; the first error is the one to show.
        with contextlib.suppress(ApiError):
            api.post(f"/v1/uploads/{upload['id']}/cancel")
        raise
    return done["file"]


def upload_path(api: ApiClient, path: Path, *, part_size: int, model: str | None) -> Any:
    """Upload `path` with a progress bar on stderr, in parts when it is larger than `part_size`; return
    the file object. Raises: ApiError."""
    with upload_progress() as progress:
        if path.stat().st_size > part_size:
            return upload_in_parts(api, path, part_size=part_size, progress=progress)
        return upload_whole(api, path, model=model, progress=progress)
