"""`FileStore` on a local or shared (DFS) directory, and the validation runner that reads from it.

Writes stream to a hidden temporary file beside the target while SHA-256 and MD5 are computed, then
rename into place: a reader never sees a half-written file, and a broken upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from studio.domain.datasets import LineIssue, ValidationLimits, ValidationReport, validate_chunks
from studio.errors import InvalidInput, PayloadTooLarge
from studio.ports import WrittenFile

# Writes are batched to this size so each trip to a worker thread moves a useful amount of data.
WRITE_BATCH = 4 << 20
READ_CHUNK = 4 << 20


class LocalFileStore:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def absolute(self, relative_path: str) -> Path:
        path = (self._root / relative_path).resolve()
        # Relative paths are built from ids and checked names, never from raw input; this is the guard.
        if self._root not in path.parents:
            raise InvalidInput(f"path {relative_path!r} leaves the data directory", code="invalid_path")
        return path

    def _temporary(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"

    async def write(self, relative_path: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> WrittenFile:
        target = self.absolute(relative_path)
        temporary = await asyncio.to_thread(self._temporary, target)
        sha256 = hashlib.sha256()
        size = 0
        fd = await asyncio.to_thread(os.open, temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            pending: list[bytes] = []
            pending_bytes = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"the file is larger than the limit of {max_bytes} bytes",
                        param="file",
                        code="file_too_large",
                    )
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= WRITE_BATCH:
                    await asyncio.to_thread(_write_all, fd, pending, sha256)
                    pending, pending_bytes = [], 0
            if pending:
                await asyncio.to_thread(_write_all, fd, pending, sha256)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            await asyncio.to_thread(_unlink, temporary)
            raise
        os.close(fd)
        await asyncio.to_thread(os.replace, temporary, target)
        return WrittenFile(relative_path, size, sha256.hexdigest(), md5=None)

    async def concat(self, parts: list[str], relative_path: str) -> WrittenFile:
        target = self.absolute(relative_path)
        sources = [self.absolute(part) for part in parts]
        return await asyncio.to_thread(self._concat, sources, target, relative_path)

    def _concat(self, sources: list[Path], target: Path, relative_path: str) -> WrittenFile:
        temporary = self._temporary(target)
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with temporary.open("xb") as out:
                for source in sources:
                    with source.open("rb") as part:
                        while block := part.read(READ_CHUNK):
                            sha256.update(block)
                            md5.update(block)
                            out.write(block)
                            size += len(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink(temporary)
            raise
        os.replace(temporary, target)
        return WrittenFile(relative_path, size, sha256.hexdigest(), md5.hexdigest())

    async def move(self, source: str, target: str) -> None:
        source_path, target_path = self.absolute(source), self.absolute(target)
        await asyncio.to_thread(target_path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, source_path, target_path)

    async def read(
        self, relative_path: str, *, offset: int = 0, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self.absolute(relative_path)
        file = await asyncio.to_thread(path.open, "rb")
        try:
            if offset:
                file.seek(offset)
            while block := await asyncio.to_thread(file.read, chunk_bytes):
                yield block
        finally:
            file.close()

    async def remove(self, relative_path: str) -> None:
        path = self.absolute(relative_path)
        await asyncio.to_thread(_remove, path)

    async def children(self, relative_path: str) -> list[str]:
        path = self._root if relative_path in {"", "."} else self.absolute(relative_path)
        return await asyncio.to_thread(_directories, path)

    async def last_modified(self, relative_path: str) -> float | None:
        return await asyncio.to_thread(_newest_mtime, self.absolute(relative_path))


class ThreadValidationRunner:
    """Validates a stored file in a worker thread, reading it in 4 MiB chunks (memory stays flat)."""

    def __init__(self, files: LocalFileStore, *, models_dir: Path | None = None) -> None:
        self._files = files
        self._models_dir = models_dir

    async def validate(
        self, relative_path: str, limits: ValidationLimits, *, tokenizer: str | None = None
    ) -> ValidationReport:
        path = self._files.absolute(relative_path)
        return await asyncio.to_thread(validate_path, path, limits, tokenizer, self._models_dir)


def validate_path(
    path: Path, limits: ValidationLimits, tokenizer: str | None = None, models_dir: Path | None = None
) -> ValidationReport:
    """Validate a file read in 4 MiB chunks (memory stays flat); return the report.

    Tokens are counted with `tokenizer` (a base model's name or directory) when given and loadable;
    otherwise estimated, with a warning saying why.
    """
    count, problem = None, None
    if tokenizer is not None:
        try:
            from studio.training.tokens import token_counter

            count = token_counter(tokenizer, models_dir)
        except Exception as exc:  # the counts fall back to the estimate; the dataset is not at fault
            problem = f"the tokenizer of {tokenizer} could not be loaded ({exc}); tokens are estimated"
    with path.open("rb") as file:
        report = validate_chunks(
            iter(lambda: file.read(READ_CHUNK), b""), limits, count_tokens=count, tokenizer_name=tokenizer
        )
    if problem is not None:
        issue = LineIssue(line=None, code="tokenizer_unavailable", message=problem)
        report = report.model_copy(update={"warnings": [*report.warnings, issue]})
    return report


def _write_all(fd: int, blocks: list[bytes], sha256: hashlib._Hash) -> None:
    for block in blocks:
        sha256.update(block)
        view = memoryview(block)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _directories(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _newest_mtime(path: Path) -> float | None:
    """The newest mtime of `path` and everything under it (a file being written counts as it grows)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return None
    if path.is_dir() and not path.is_symlink():
        for directory, _, names in os.walk(path):
            for name in [".", *names]:
                try:
                    newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
