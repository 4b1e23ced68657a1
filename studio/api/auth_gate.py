"""Pure ASGI authentication gate: callers are checked from their headers before any body byte is read.

FastAPI reads (and parses) a request body before it runs the dependencies, so without this gate an
unauthenticated caller could make the ingress take in a whole body only to answer 401. The gate
answers 401/403/429 itself, without calling `receive()`, and leaves what it learnt in the scope's
state, where `deps.current_principal` and `deps.require_admin` take it instead of checking again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from studio.api.errors import studio_error_response
from studio.api.middleware import first_header, route_path
from studio.api.services import Services
from studio.errors import StudioError

# Keys of the scope's state (`request.state`) the gate fills for the dependencies.
PRINCIPAL_STATE = "principal"
ADMIN_STATE = "admin_checked"

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIX = "/studio"  # the web app's static files
ADMIN_PREFIX = "/admin"


def is_public(path: str) -> bool:
    """Return whether `path` is served to anyone: health, the API docs, the web app."""
    return path in PUBLIC_PATHS or path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/")


def is_admin(path: str) -> bool:
    """Return whether `path` needs the admin key."""
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


class AuthGate:
    """Authenticates every request to a route that is not public, before its body is read.

    Paths under `/admin` need the admin key, every other route a client's key. A request that matches
    no route goes on unchecked, to its 404 or 405 (neither reads the body). While the services are not
    up yet the request goes on too, to the dependencies' 503.
    """

    def __init__(self, app: ASGIApp, *, services: Callable[[], Services | None], router: Router) -> None:
        self.app = app
        self._services = services
        self._router = router

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self._router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        services = self._services()
        if services is None or is_public(path) or not self._routed(scope):
            await self.app(scope, receive, send)
            return
        raw = first_header(scope, b"authorization")
        authorization = None if raw is None else raw.decode("latin-1")
        state: dict[str, Any] = scope.setdefault("state", {})
        try:
            if is_admin(path):
                services.auth.require_admin(authorization)
                state[ADMIN_STATE] = True
                state["client_id"] = "admin"
            else:
                principal = await services.auth.authenticate(authorization)
                state[PRINCIPAL_STATE] = principal
                state["client_id"] = principal.client.id
        except StudioError as exc:
            # A plain JSONResponse only sends: the body is never received.
            await studio_error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
