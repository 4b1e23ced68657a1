"""Files on the data disk, the object store, the document store and the cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file written by the file store, with the digests computed while it streamed.

    `md5` only where a caller checks one (assembled uploads): it costs as much CPU as SHA-256.
    """

    relative_path: str
    bytes: int
    sha256: str
    md5: str | None


@dataclass(frozen=True, slots=True)
class StoredPath:
    """Where a dataset's bytes should be, for the sweeper's check that they still are."""

    id: str
    client_id: str
    local_path: str
    missing_since: int | None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """One file system under the data directory. `holds_files`: uploaded bytes land on it."""

    path: str
    free_bytes: int
    total_bytes: int
    holds_files: bool


class DiskSpace(Protocol):
    """Free space of the file systems that hold the data directory and the datasets."""

    async def usage(self) -> list[DiskUsage]:
        """Return each distinct file system once."""
        ...


class LeaseRepository(Protocol):
    """Named leases, so that one of several replicas does a periodic piece of work (`leases`)."""

    async def claim(self, name: str, *, holder: str, now: float, until: float) -> bool:
        """Take the lease `name` until `until` if nobody holds it at `now`; return whether it was taken."""
        ...


class FileStore(Protocol):
    """The local (or shared, DFS) directory holding datasets, by paths relative to its root."""

    async def write(self, relative_path: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> WrittenFile:
        """Stream `chunks` to a temporary file, then rename it to `relative_path`.

        Raises:
            PayloadTooLarge: more than `max_bytes` arrived (nothing is left behind).
        """
        ...

    async def concat(self, parts: list[str], relative_path: str) -> WrittenFile:
        """Concatenate stored files into a new one (temporary, then renamed)."""
        ...

    async def move(self, source: str, target: str) -> None: ...

    def read(
        self, relative_path: str, *, offset: int = 0, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]: ...

    async def remove(self, relative_path: str) -> None:
        """Remove a file or a directory tree; missing is fine."""
        ...

    def absolute(self, relative_path: str) -> Path: ...

    async def children(self, relative_path: str) -> list[str]:
        """Return the names of the directories right under `relative_path` ("": the root); [] if none."""
        ...

    async def last_modified(self, relative_path: str) -> float | None:
        """Return the newest modification time of the path or anything under it; None if it is gone."""
        ...


class Cache(Protocol):
    """A shared key-value cache with expiry (Redis)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr_window(self, key: str, *, ttl_s: int) -> int:
        """Increment a counter that expires `ttl_s` after its first increment; return the new value."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class ObjectStore(Protocol):
    """An S3-compatible bucket."""

    @property
    def bucket(self) -> str: ...

    async def put_file(self, *, key: str, path: Path) -> str:
        """Upload `path` to `key` (multipart for big files); return its `s3://` URI."""
        ...

    async def put_directory(self, *, prefix: str, path: Path) -> str:
        """Upload every file under `path` to `<prefix>/<relative path>`; return the prefix's `s3://` URI."""
        ...

    async def get_file(self, *, key: str, path: Path) -> None: ...

    async def get_directory(self, *, prefix: str, path: Path) -> None:
        """Download every object under `<prefix>/` into `path` (which appears whole, or not at all).
        Raises NotFound: nothing under the prefix."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
