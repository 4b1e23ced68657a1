"""The bounded hand-off in Ray's direct-ingress receive proxy: reads follow the app, disconnects still end it.

Runs Ray's own `ASGIDIReceiveProxy` (no cluster needed) against a receive() that would deliver a
body of many chunks at once, with the app's loop on another thread as in a Serve replica.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ray.serve._private.direct_ingress_http_util import ASGIDIReceiveProxy

from studio.backends.serve_body_flow import MAX_UNREAD_MESSAGES, install

CHUNKS = 200


@pytest.fixture
def user_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on its own thread: where Serve runs the app's code by default."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def body_receive(disconnect: asyncio.Event) -> tuple[Any, list[int]]:
    """A server's receive(): CHUNKS body messages at once, then http.disconnect when told."""
    calls = [0]

    async def receive() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] <= CHUNKS:
            return {"type": "http.request", "body": b"x" * 1024, "more_body": calls[0] < CHUNKS}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    return receive, calls


def test_install_is_idempotent() -> None:
    assert install() is True
    assert install() is True


async def test_reads_wait_for_the_app_on_its_own_loop(user_loop: asyncio.AbstractEventLoop) -> None:
    assert install()
    disconnect = asyncio.Event()
    receive, calls = body_receive(disconnect)
    proxy = ASGIDIReceiveProxy({"type": "http"}, receive, user_loop)
    fetching = proxy.fetch_until_disconnect_task()
    await asyncio.sleep(0.3)
    # The app has read nothing: the proxy holds at most the queue's room plus the one in hand.
    assert calls[0] <= MAX_UNREAD_MESSAGES + 2, calls[0]

    async def app_reads_body() -> int:
        total = 0
        while True:
            message = await proxy()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                return total

    read = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(app_reads_body(), user_loop))
    assert read == CHUNKS * 1024
    assert not fetching.done()  # waiting in receive() for a disconnect, as Ray's loop does
    disconnect.set()
    assert await asyncio.wait_for(fetching, 5) is None
    message = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(proxy(), user_loop))
    assert message == {"type": "http.disconnect"}


async def test_reads_wait_for_the_app_on_the_same_loop() -> None:
    assert install()
    disconnect = asyncio.Event()
    receive, calls = body_receive(disconnect)
    proxy = ASGIDIReceiveProxy({"type": "http"}, receive, asyncio.get_running_loop())
    fetching = proxy.fetch_until_disconnect_task()
    await asyncio.sleep(0.1)
    assert calls[0] <= MAX_UNREAD_MESSAGES + 2, calls[0]
    for _ in range(CHUNKS):
        await proxy()
    disconnect.set()
    assert await asyncio.wait_for(fetching, 5) is None


async def test_a_finished_request_cancels_a_waiting_hand_off(user_loop: asyncio.AbstractEventLoop) -> None:
    """The app answered (say 401) without reading the body: Serve cancels the loop, which must end."""
    assert install()
    receive, calls = body_receive(asyncio.Event())
    proxy = ASGIDIReceiveProxy({"type": "http"}, receive, user_loop)
    fetching = proxy.fetch_until_disconnect_task()
    await asyncio.sleep(0.2)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(fetching, 5)
    assert calls[0] <= MAX_UNREAD_MESSAGES + 2
