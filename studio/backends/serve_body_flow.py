"""Flow control for request bodies that reach an ingress replica on its own port (HAProxy, direct ingress).

Ray 2.60's direct-ingress server (uvicorn inside the replica) gives the ASGI app a receive proxy,
`ASGIDIReceiveProxy`, whose background task calls uvicorn's `receive()` in a loop and puts every
message on an unbounded queue, so that it notices a client going away. uvicorn stops reading the
socket only while its own buffer (64 KiB) is unread; that loop always reads it, so a body arrives as
fast as the network carries it and waits in the replica's memory until the app reads it: a 1 GB
upload grew the replica by about as much (`bench/upload_bench.py`).

`install()` makes the hand-off bounded: the loop waits until the app has taken all but
`MAX_UNREAD_MESSAGES` messages before it reads the next, so uvicorn stops reading, TCP's window
closes and HAProxy (or the client) waits. Disconnects are still seen: once the app has read the
body, the loop waits in `receive()` as before, and a cancelled request cancels the waiting hand-off.
Remove when Ray bounds this queue itself (checked by tests/unit/backends/test_serve_body_flow.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

MAX_UNREAD_MESSAGES = 4  # uvicorn's messages are up to ~64-256 KiB each: well under 1 MB held


def install() -> bool:
    """Bound Ray's direct-ingress receive queue in this process; return whether it is bounded.

    Idempotent. Returns False (and logs why) when this Ray has no such class or a different shape:
    the replica then still serves, with Ray's own unbounded queue.
    """
    try:
        from ray.serve._private import direct_ingress_http_util as module
    except ImportError:
        log.warning("ray.serve._private.direct_ingress_http_util not found: request bodies not bounded")
        return False
    proxy: Any = getattr(module, "ASGIDIReceiveProxy", None)
    if proxy is None or not hasattr(proxy, "_fetch_until_disconnect") or not hasattr(proxy, "queue"):
        log.warning("Ray's ASGIDIReceiveProxy changed shape: request bodies not bounded")
        return False
    if getattr(proxy, "_studio_bounded", False):
        return True
    proxy.queue = property(_bounded_queue)
    proxy._fetch_until_disconnect = _fetch_until_disconnect
    proxy._studio_bounded = True
    return True


def _bounded_queue(self: Any) -> asyncio.Queue[Any]:
    # Created lazily on the user code's event loop (where `__call__` and `_put` run), as Ray does.
    if self._queue is None:
        self._queue = asyncio.Queue(maxsize=MAX_UNREAD_MESSAGES)
    queue: asyncio.Queue[Any] = self._queue
    return queue


async def _put(proxy: Any, message: Any) -> None:
    await proxy.queue.put(message)


async def _fetch_until_disconnect(self: Any) -> int | None:
    """Ray's loop (same return values), but each put waits for room: the app's pace sets the reads."""
    while True:
        message = await self._receive()
        if asyncio.get_running_loop() is self._user_event_loop:
            await _put(self, message)
        else:
            # The app runs on its own thread's loop: hand over there and wait until it was taken.
            handed = asyncio.run_coroutine_threadsafe(_put(self, message), self._user_event_loop)
            await asyncio.wrap_future(handed)
        if message["type"] == "http.disconnect":
            self._disconnect_message = message
            return None
        if message["type"] == "websocket.disconnect":
            self._disconnect_message = message
            code: int = message["code"]
            return code
