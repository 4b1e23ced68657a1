"""The training process's event lines, as the tracker reads them out of a Ray job's log.

The entrypoint prints `MINISTUDIO_EVENT <json>`; Ray may prefix a line (`(RayTrainWorker pid=1) `) when
it forwards a worker's output, so the marker is looked for anywhere in the line. Only complete lines
are read: a line still being written is left for the next read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

EVENT_MARKER = "MINISTUDIO_EVENT "
Level = Literal["info", "warn", "error"]


@dataclass(frozen=True, slots=True)
class TrainingEvent:
    """One event line: its end offset in the log (to resume reading after it) and its fields."""

    end_offset: int
    fields: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.fields.get("type", ""))


def parse_events(log: str, start: int) -> tuple[list[TrainingEvent], int]:
    """Return the events in `log[start:]` up to its last newline, and the offset to read from next
    (`parse_event_bytes` on text: offsets count characters from `start`, event ends bytes)."""
    chunk = log[start:].encode()
    events, consumed = parse_event_bytes(chunk, start)
    return events, start + len(chunk[:consumed].decode())


def parse_event_bytes(chunk: bytes, base: int) -> tuple[list[TrainingEvent], int]:
    """Return the events of the complete lines of `chunk` (read from byte `base` of a log), each with
    its end as a byte offset in the log, and how many bytes of `chunk` those lines take."""
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    events: list[TrainingEvent] = []
    position = base
    for line in chunk[:end].splitlines(keepends=True):
        position += len(line)
        at = line.find(EVENT_MARKER.encode())
        if at < 0:
            continue
        try:
            fields = json.loads(line[at + len(EVENT_MARKER) :])
        except ValueError:
            continue
        if isinstance(fields, dict):
            events.append(TrainingEvent(end_offset=position, fields=fields))
    return events, end


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def describe(event: TrainingEvent) -> tuple[Level, str]:
    """Return the level and the one-line message a user reads for `event` (OpenAI's event wording)."""
    f = event.fields
    if event.type == "metrics" and "train_loss" in f:
        return (
            "info",
            f"Step {f.get('step')}/{f.get('total_steps')}: training loss={_number(f['train_loss'])}",
        )
    if event.type == "metrics":
        parts = [f"{k}={_number(v)}" for k, v in f.items() if k.startswith("valid_")]
        return "info", f"Step {f.get('step')}: " + ", ".join(parts)
    if event.type == "checkpoint":
        return "info", f"Checkpoint written at step {f.get('step')}"
    if event.type == "warning":
        return "warn", str(f.get("message", ""))
    if event.type == "error":
        return "error", f"Training failed: {f.get('message', 'unknown error')}"
    if event.type == "result":
        return (
            "info",
            f"Training finished after {f.get('steps')} steps, {f.get('trained_tokens')} trained tokens",
        )
    return "info", f"{event.type or 'event'}: " + json.dumps(f, sort_keys=True)[:500]


def keeps_metrics(*, step: int | None, total_steps: int | None, cap: int) -> bool:
    """Return whether a metrics event of `step` is stored, keeping at most about `cap` per attempt.

    Every step while the run has at most `cap` steps; past that, every `stride`-th step (stride
    `ceil(total_steps / cap)`) and the last one, so a long run's curve keeps its whole length at a
    lower resolution instead of its first `cap` steps. Events without a step are always kept. The
    progress fields on the job update from every event, stored or not.
    """
    if step is None or total_steps is None or total_steps <= cap:
        return True
    stride = -(-total_steps // cap)
    return step % stride == 0 or step >= total_steps
