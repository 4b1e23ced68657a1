"""`DiskSpace` on local file systems: free and total bytes from `statvfs`, each file system once."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from studio.ports import DiskUsage


class LocalDiskSpace:
    """The file systems holding `files_root` (where uploads land) and `data_dir` (the embedded
    database, logs, jobs), reported once each when they are the same."""

    def __init__(self, *, files_root: Path, data_dir: Path) -> None:
        self._files_root = files_root
        self._data_dir = data_dir

    async def usage(self) -> list[DiskUsage]:
        return await asyncio.to_thread(self._usage)

    def _usage(self) -> list[DiskUsage]:
        seen: dict[int, DiskUsage] = {}
        for path, holds_files in ((self._files_root, True), (self._data_dir, False)):
            existing = _nearest_existing(path)
            device = os.stat(existing).st_dev
            if device in seen:
                continue
            total, _, free = shutil.disk_usage(existing)
            seen[device] = DiskUsage(
                path=str(path), free_bytes=free, total_bytes=total, holds_files=holds_files
            )
        return list(seen.values())


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (the data directory may not exist yet)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
