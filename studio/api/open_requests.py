"""A cap on the requests one client has open at once, so no tenant can hold every ingress slot.

Serve gives each ingress replica a fixed number of concurrent requests (`max_ongoing_requests`); event
and inference streams, and waits for a model to start, hold one for minutes. Counted per client and
per replica, from the identity the auth gate found (so before any body byte is read); past the cap a
request is answered 429 with Retry-After at once. The admin key is not capped.
"""

from __future__ import annotations

from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send

from studio.api.errors import studio_error_response
from studio.errors import QuotaExceeded

RETRY_AFTER_S = 1


class OpenRequestLimit:
    """Answers 429 to a client that already has `max_open` requests open on this replica."""

    def __init__(self, app: ASGIApp, *, max_open: int) -> None:
        self.app = app
        self._max_open = max_open
        self._open: Counter[str] = Counter()

    def open_requests(self, client_id: str) -> int:
        """Return how many requests `client_id` has open on this replica now."""
        return self._open[client_id]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client_id = scope.get("state", {}).get("client_id") if scope["type"] == "http" else None
        if client_id is None or client_id == "admin":
            await self.app(scope, receive, send)
            return
        if self._open[client_id] >= self._max_open:
            error = QuotaExceeded(
                f"this client has {self._max_open} requests open on this replica, its limit "
                "(STUDIO_API__MAX_OPEN_REQUESTS_PER_CLIENT); close a stream or retry shortly",
                code="too_many_open_requests",
                retry_after_s=RETRY_AFTER_S,
            )
            await studio_error_response(error)(scope, receive, send)
            return
        self._open[client_id] += 1
        try:
            await self.app(scope, receive, send)  # returns when the response, streamed or not, is sent
        finally:
            self._open[client_id] -= 1
            if self._open[client_id] <= 0:
                del self._open[client_id]
