"""Server-Sent Events framing: ids, keep-alive comments while the source is quiet, the idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from studio.api.sse import KEEPALIVE, SseMessage, frame, sse_stream


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [part async for part in stream]


def test_messages_carry_their_id_first() -> None:
    assert frame(SseMessage(data='{"a": 1}', id="7")) == 'id: 7\ndata: {"a": 1}\n\n'
    assert frame(SseMessage(data="[DONE]")) == "data: [DONE]\n\n"


async def test_a_quiet_source_gets_keepalives_and_its_messages_are_not_lost() -> None:
    async def slow() -> AsyncIterator[SseMessage]:
        yield SseMessage(data="1", id="1")
        await asyncio.sleep(0.35)  # quiet: keep-alives go out meanwhile, the sleep is not cut short
        yield SseMessage(data="2", id="2")

    parts = await collect(sse_stream(slow(), keepalive_s=0.1, idle_timeout_s=5))
    assert parts[0] == frame(SseMessage(data="1", id="1"))
    assert parts[-1] == frame(SseMessage(data="2", id="2"))
    assert 2 <= parts.count(KEEPALIVE) <= 4 and len(parts) == parts.count(KEEPALIVE) + 2


async def test_a_source_silent_past_the_idle_timeout_is_ended_and_closed() -> None:
    closed = asyncio.Event()

    async def stuck() -> AsyncIterator[SseMessage]:
        try:
            yield SseMessage(data="1", id="1")
            await asyncio.sleep(60)
            yield SseMessage(data="never")
        finally:
            closed.set()

    parts = await asyncio.wait_for(collect(sse_stream(stuck(), keepalive_s=0.05, idle_timeout_s=0.2)), 5)
    assert parts[0].startswith("id: 1") and "never" not in "".join(parts)
    assert closed.is_set()
