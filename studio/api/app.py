"""`create_api()`: the FastAPI application, independent of how its services are built."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

from studio.api.auth_gate import AuthGate
from studio.api.errors import install_error_handlers
from studio.api.middleware import BodyLimits, DeclaredSizeLimitMiddleware, RequestContextMiddleware
from studio.api.open_requests import OpenRequestLimit
from studio.api.routes import (
    admin,
    base_models,
    datasets,
    deployments,
    files,
    health,
    inference,
    jobs,
    me,
    models,
    studio,
    uploads,
)
from studio.api.services import Services

ServicesFactory = Callable[[], AbstractAsyncContextManager[Services]]


def create_api(
    services: ServicesFactory,
    *,
    cors_origins: list[str],
    cors_allow_credentials: bool,
    body_limits: BodyLimits,
    max_open_requests: int,
    echo_request_id: bool = True,
) -> FastAPI:
    """Return the ingress app. `services()` is entered at start (connects stores) and left at shutdown.

    Request bodies are limited by kind of route (`body_limits`, `BodyLimits.from_settings`), the
    requests one client has open at once by `max_open_requests` (per replica).
    `echo_request_id=False` behind Serve's proxy, which returns `X-Request-ID` itself.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services() as ready:
            app.state.services = ready
            yield
            app.state.services = None

    app = FastAPI(
        title="Mini Studio",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Added last = outermost. From the outside in: the request id (it wraps everything, errors from
    # other middleware included), CORS (so browsers can read 401s and 413s), the auth gate (before
    # any body byte is read), the client's open requests, the body limits, gzip.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(DeclaredSizeLimitMiddleware, limits=body_limits)
    app.add_middleware(OpenRequestLimit, max_open=max_open_requests)
    app.add_middleware(AuthGate, services=lambda: getattr(app.state, "services", None), router=app.router)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_credentials=cors_allow_credentials,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware, echo_header=echo_request_id)
    routers = (
        health.router, admin.router, me.router, base_models.admin_router, base_models.router, jobs.router,
        jobs.seed_router, models.router, files.router, datasets.router, uploads.router, deployments.router,
        deployments.seed_router, inference.router, inference.seed_router, studio.router,
    )  # fmt: skip
    for router in routers:
        app.include_router(router)
    return app
