"""Group commit: concurrent writes to one collection leave as one command, sharing one journal flush.

A journaled write costs a round trip and a flush on the server whatever its size, and the embedded
server answers one command at a time, at a fixed cost per command that dwarfs a small document's. So
writes that arrive while one is in flight wait for it and then go together: with nothing in flight a
write leaves at once (no added latency when idle), and under load each command carries everything
that queued behind the previous one (up to `max_batch`). Each writer still gets its own outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from studio.errors import Unavailable

T = TypeVar("T")

# The outcome of each item of a batch, in order: None for written, else the error to raise for it.
Flush = Callable[[list[T]], Awaitable[Sequence[BaseException | None]]]


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


def bulk_outcomes(
    count: int, details: Mapping[str, Any], error: Callable[[dict[str, Any]], BaseException]
) -> list[BaseException | None]:
    """Return each of `count` operations' outcome from a bulk write's error `details`: its write
    error through `error`, or None; a write concern error fails them all (nothing is known durable)."""
    if details.get("writeConcernErrors"):
        failed = Unavailable("the database could not confirm the write as journaled")
        return [failed] * count
    outcomes: list[BaseException | None] = [None] * count
    for write_error in details.get("writeErrors", []):
        outcomes[int(write_error["index"])] = error(write_error)
    return outcomes


class GroupCommit(Generic[T]):
    """Batches `write(item)` calls into `flush(items)` calls, one in flight at a time."""

    def __init__(self, flush: Flush[T], *, max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, item: T) -> None:
        """Return once `item` is written (acknowledged as the flush's write concern says).

        Raises what the flush reports for this item, or what the flush raised as a whole. A caller
        cancelled while waiting does not withdraw its item (a write in flight cannot be recalled).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a cancelled caller's error is not "never retrieved"
        self._pending.append((item, done))
        if self._drainer is None or self._drainer.done():
            # A task of its own: one writer's cancellation must not strand the others' items.
            self._drainer = asyncio.create_task(self._drain())
        await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                outcomes: Sequence[BaseException | None] = await self._flush([item for item, _ in batch])
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)
