"""A node-local cache of model folders kept in S3 (base weights, full fine-tunes, LoRA adapters).

A model server on a node that does not see the head's data directory names its model or adapter by
`s3://bucket/prefix` (the job's `output_model_uri`, which the deployment record carries);
`ModelCache.local` returns a local folder for it, downloading the whole folder once into
`<root>/s3-models/<hash of the URI>/` (it appears whole or not at all, see `studio.training.s3_objects`).
Anything else (a local path, a hub id) is returned unchanged. `<root>` is the node's cache folder
(`$STUDIO_NODE_CACHE_DIR`); `s3-models/` is the cache's alone (the trainer keeps base models it builds
under `<root>/models/`, which the cache never evicts).

The cache is bounded: after each download the least recently used folders are deleted, whole, until
the cache holds at most `max_bytes` (the folder just used is kept even when it alone is larger). Use is
recorded as the folder's modification time. Replicas on one node share the cache: downloads and
evictions hold an exclusive lock on `<root>/s3-models/.lock`. A folder evicted while another replica still
has it open only loses its files once that replica is done with them (POSIX unlink semantics); engines
load weights and adapters into memory when they start or attach them, and a replica asks the cache
again each time it loads an adapter, so an evicted one is fetched again.

Blocking (boto3, the file system): call `local` from a worker thread in async code.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from studio.training.remote_files import node_cache_dir
from studio.training.s3_objects import S3Location, download_folder, folder_size, is_s3_uri, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024**3
CACHE_FOLDER = "s3-models"


class ModelCache:
    """Node-local copies of S3 model folders, bounded in bytes, least recently used evicted whole."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """`root`: the node's cache folder (default `$STUDIO_NODE_CACHE_DIR`, see `node_cache_dir`).
        S3 credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`)."""
        self._dir = (root or node_cache_dir()) / CACHE_FOLDER
        self._max_bytes = max_bytes
        self._endpoint_url = endpoint_url
        self._region = region
        self._timeout_s = timeout_s
        self._client: S3Client | None = None

    @property
    def directory(self) -> Path:
        """The folder holding the cached copies."""
        return self._dir

    def local(self, source: str) -> str:
        """Return a local folder for `source`: the cached copy of an `s3://` folder (downloaded when
        missing), or `source` itself for anything else.

        Raises:
            FileNotFoundError: nothing is stored under the S3 prefix.
            botocore's errors: S3 is unreachable or refuses the credentials.
        """
        if not is_s3_uri(source):
            return source
        location = S3Location.parse(source)
        target = self._dir / hashlib.sha256(str(location).encode()).hexdigest()[:32]
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not target.is_dir():
                started = time.monotonic()
                download_folder(self._s3(), location, target)
                log.info("fetched %s into %s in %.1f s", location, target, time.monotonic() - started)
            os.utime(target)  # its last use, for the eviction order
            self._evict(keep=target)
        return str(target)

    def cached(self) -> list[Path]:
        """Return the cached folders, least recently used first."""
        if not self._dir.is_dir():
            return []
        folders = [p for p in self._dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(folders, key=lambda p: p.stat().st_mtime)

    def _evict(self, *, keep: Path) -> None:
        """Delete the least recently used folders (never `keep`) until the cache fits `max_bytes`."""
        folders = self.cached()
        sizes = {folder: folder_size(folder) for folder in folders}
        total = sum(sizes.values())
        for folder in folders:
            if total <= self._max_bytes:
                return
            if folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= sizes[folder]
            log.info("evicted %s (%d bytes) from the model cache", folder, sizes[folder])

    def _s3(self) -> S3Client:
        if self._client is None:
            self._client = s3_client(
                endpoint_url=self._endpoint_url, region=self._region, timeout_s=self._timeout_s
            )
        return self._client

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def node_local(path: Path) -> Path:
    """Return `path` when its parent (the head's data directory) is on this node, else the folder of the
    same name in the node's cache: a model server on a node that does not mount the data directory keeps
    its scratch files and the base models it makes there (as the trainer does, `remote_files.localize`)."""
    return path if path.parent.is_dir() else node_cache_dir() / path.name


def local_model(source: str, uri: str | None, cache: ModelCache | None) -> str:
    """Return where this node reads a model or adapter: `source` itself when it is a folder here (the
    shared file system, or the node that trained it) or when there is no S3 copy to fall back on, else
    the node's cached copy of `uri`.

    Raises:
        FileNotFoundError: `source` is not here and nothing is stored under `uri`.
        botocore's errors: S3 is unreachable or refuses the credentials.
    """
    if cache is None or uri is None or Path(source).is_dir():
        return source
    return cache.local(uri)
