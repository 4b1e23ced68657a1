"""A file store that counts the bytes clients send, as a decorator of the plain one.

Wired by `app/container.py` in place of it, so the dataset and upload services need not know about
metrics. (Jobs reaching a final status are counted by `JobJournal` itself.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from studio.ports import FileStore, StudioMetrics, WrittenFile

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class MeteredFileStore:
    """A `FileStore` that counts the bytes of every file written through it (paths begin with the
    client id: `<client>/<file>/...`, `<client>/uploads/<upload>/<part>`)."""

    def __init__(self, files: FileStore, *, metrics: StudioMetrics) -> None:
        self._files = files
        self._metrics = metrics

    async def write(self, relative_path: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> WrittenFile:
        written = await self._files.write(relative_path, chunks, max_bytes=max_bytes)
        client_id = relative_path.split("/", 1)[0]
        self._metrics.uploaded_bytes(client_id=client_id, size=written.bytes)
        return written

    async def concat(self, parts: list[str], relative_path: str) -> WrittenFile:
        # The parts were counted as they arrived.
        return await self._files.concat(parts, relative_path)

    async def move(self, source: str, target: str) -> None:
        await self._files.move(source, target)

    def read(
        self, relative_path: str, *, offset: int = 0, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        return self._files.read(relative_path, offset=offset, chunk_bytes=chunk_bytes)

    async def remove(self, relative_path: str) -> None:
        await self._files.remove(relative_path)

    def absolute(self, relative_path: str) -> Path:
        return self._files.absolute(relative_path)

    async def children(self, relative_path: str) -> list[str]:
        return await self._files.children(relative_path)

    async def last_modified(self, relative_path: str) -> float | None:
        return await self._files.last_modified(relative_path)
