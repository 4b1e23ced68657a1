"""Reading a W&B offline run's transaction log (`run-<id>.wandb`): the records wandb wrote, as it wrote them.

wandb writes a LevelDB-style log: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks of
records, each with a 7-byte header (CRC, 2-byte length, type: full / first / middle / last), holding
protobuf `Record`s. wandb 0.31 ships no Python reader for it, so the tests read it here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B", data[:8]
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def offline_run(run_file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the run's settings (id, project, name, tags) and its history rows, in order."""
    from wandb.proto import wandb_internal_pb2

    run: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for payload in _payloads(run_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {
                "id": record.run.run_id,
                "project": record.run.project,
                "name": record.run.display_name,
                "tags": list(record.run.tags),
                "config": {i.key: json.loads(i.value_json) for i in record.run.config.update},
            }
        elif kind == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return run, history
