"""A model directory as a streamed tar, and LoRA merges in a Ray task: what `ModelDownloads` reads.

The tar is written on the fly (headers from `tarfile.TarInfo`, file bytes read in chunks in a thread),
never staged on disk or held in memory; its size is known before the first byte, so the response has a
Content-Length. Merges run in a Ray task (their own process: the ingress never holds a model's weights),
bounded by a timeout after which the task is cancelled.
"""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import ray

from studio.errors import NotFound, Unavailable

CHUNK_BYTES = 1 << 20
BLOCK = tarfile.BLOCKSIZE
# A Ray task's reservation: one core, as a training worker's; the merge itself is single-threaded enough.
MERGE_NUM_CPUS = 1.0
# A 7B model merges in minutes on CPUs; past this the task is cancelled and the download refused (503).
MERGE_TIMEOUT_S = 1800.0


def _members(directory: Path, root: str) -> list[tuple[Path, bytes, int]]:
    """Return each regular file under `directory` (sorted) with its tar header and size."""
    members: list[tuple[Path, bytes, int]] = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name.startswith((".tmp-", ".old-")):
            continue
        stat = path.stat()
        info = tarfile.TarInfo(f"{root}/{path.relative_to(directory).as_posix()}")
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        info.mode = 0o644
        members.append((path, info.tobuf(format=tarfile.PAX_FORMAT), stat.st_size))
    return members


def _padding(size: int) -> int:
    return -size % BLOCK


class TarDirectoryArchiver:
    """`DirectoryArchiver` on the local (or shared) disk."""

    async def archive(self, directory: str, *, root: str) -> tuple[int, AsyncIterator[bytes]]:
        """Return the size of the tar of `directory` (members under `root/`) and its bytes, streamed.

        Raises:
            NotFound: `directory` does not exist or holds no file.
        """
        folder = Path(directory)
        members = await asyncio.to_thread(lambda: _members(folder, root) if folder.is_dir() else [])
        if not members:
            raise NotFound(f"no model files at {directory}", code="model_files_missing")
        size = sum(len(header) + length + _padding(length) for _, header, length in members) + 2 * BLOCK
        return size, self._stream(members)

    async def _stream(self, members: list[tuple[Path, bytes, int]]) -> AsyncIterator[bytes]:
        for path, header, length in members:
            yield header
            handle: IO[bytes] = await asyncio.to_thread(path.open, "rb")
            try:
                left = length
                while left > 0:
                    chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, left))
                    if not chunk:
                        # The file shrank while it was sent: the archive would be corrupt, so stop.
                        raise OSError(f"{path} changed while it was being sent")
                    left -= len(chunk)
                    yield chunk
            finally:
                await asyncio.to_thread(handle.close)
            if pad := _padding(length):
                yield bytes(pad)
        yield bytes(2 * BLOCK)


def _merge(base_model: str, adapter_dir: str, output_dir: str, models_dir: str | None) -> str:
    from studio.training.merge import merge_adapter

    merged = merge_adapter(
        base_model=base_model,
        adapter_dir=Path(adapter_dir),
        output_dir=Path(output_dir),
        models_dir=Path(models_dir) if models_dir else None,
    )
    return str(merged)


class RayAdapterMerger:
    """`AdapterMerger`: the merge in a Ray task of this cluster, cancelled past `timeout_s`."""

    def __init__(self, *, models_dir: Path | None, timeout_s: float = MERGE_TIMEOUT_S) -> None:
        self._models_dir = str(models_dir) if models_dir is not None else None
        self._timeout_s = timeout_s

    async def merge(self, *, base_model: str, adapter_dir: str, output_dir: str) -> None:
        """Write the merged model to `output_dir` (nothing to do when it is there already).

        Raises:
            Unavailable: no Ray here (the process is not a Ray worker or driver), the merge failed or
            ran past the timeout.
        """
        if await asyncio.to_thread(lambda: (Path(output_dir) / "config.json").is_file()):
            return
        if not ray.is_initialized():
            raise Unavailable("merging adapters needs the Ray cluster, which this process is not part of")
        task = ray.remote(_merge).options(num_cpus=MERGE_NUM_CPUS, max_retries=0, name="merge-adapter")
        ref = task.remote(base_model, adapter_dir, output_dir, self._models_dir)
        try:
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout=self._timeout_s)
        except TimeoutError as exc:
            ray.cancel(ref, force=True)
            raise Unavailable(
                f"merging the adapter took over {self._timeout_s:.0f} s; try again later"
            ) from exc
        except ray.exceptions.RayError as exc:
            raise Unavailable(f"merging the adapter failed: {exc}") from exc
