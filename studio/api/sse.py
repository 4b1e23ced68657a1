"""Server-Sent Events framing: `id:` lines, keep-alive comments and an idle timeout, for every stream.

Services yield what happens (events, chunks); this module turns it into the wire format. A comment line
(`: keep-alive`) goes out whenever nothing else did for `keepalive_s`, so proxies and load balancers
that close quiet connections keep the stream open, and a client sees the server is still there. A
stream with nothing to send for `idle_timeout_s` ends (the client reconnects, with `Last-Event-ID` where
the stream has ids), so a stream nobody feeds does not hold an ingress slot for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

KEEPALIVE = ": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class StreamTimings:
    """How streams keep alive and end (`ApiSettings.sse_keepalive_s`, `.stream_idle_timeout_s`)."""

    keepalive_s: float
    idle_timeout_s: float


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One message: its `data` (one line of JSON, or `[DONE]`) and, for resumable streams, its `id`."""

    data: str
    id: str | None = None


def frame(message: SseMessage) -> str:
    """Return `message` in the wire format (`id:` first when it has one)."""
    head = f"id: {message.id}\n" if message.id is not None else ""
    return f"{head}data: {message.data}\n\n"


async def sse_stream(
    messages: AsyncIterator[SseMessage], *, keepalive_s: float, idle_timeout_s: float
) -> AsyncIterator[str]:
    """Yield `messages` framed, with a keep-alive comment after every `keepalive_s` of quiet; end after
    `idle_timeout_s` without a message (the source is closed then)."""
    source = aiter(messages)
    pending: asyncio.Task[SseMessage] | None = None
    quiet_since = asyncio.get_running_loop().time()
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=keepalive_s)
            if not done:  # the source is still working on its next message: the task keeps running
                if asyncio.get_running_loop().time() - quiet_since >= idle_timeout_s:
                    return
                yield KEEPALIVE
                continue
            task, pending = pending, None
            try:
                message = task.result()
            except StopAsyncIteration:
                return
            quiet_since = asyncio.get_running_loop().time()
            yield frame(message)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):
                await aclose()
