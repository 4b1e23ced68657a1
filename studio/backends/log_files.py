"""Reading a range of a run's log file on the node that holds it."""

from __future__ import annotations

import os
from pathlib import Path


def slice_range(data: bytes, offset: int, max_bytes: int) -> bytes:
    """Return what `read_range` would of a file holding `data`."""
    start = max(len(data) + offset, 0) if offset < 0 else offset
    return data[start : start + max(max_bytes, 0)]


def read_range(path: Path, offset: int, max_bytes: int) -> bytes:
    """Return at most `max_bytes` of `path` from byte `offset`, or from `-offset` bytes before its end
    when `offset` is negative; b"" past its end or when the file does not exist (yet)."""
    try:
        with path.open("rb") as log:
            if offset < 0:
                log.seek(max(os.fstat(log.fileno()).st_size + offset, 0))
            else:
                log.seek(offset)
            return log.read(max(max_bytes, 0))
    except FileNotFoundError:
        return b""
