"""Pure ASGI middleware: request ids, one access log line per request, request body limits.

Pure ASGI (not `BaseHTTPMiddleware`) so streaming responses stream and each request costs little.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studio.api.errors import studio_error_response
from studio.api.multipart import MAX_FIELD_BYTES, MAX_PARTS
from studio.config import Settings
from studio.errors import PayloadTooLarge
from studio.logs import ACCESS_LOGGER, client_id_var, request_id_var
from studio.schemas.common import ErrorDetail, ErrorResponse

access_log = logging.getLogger(ACCESS_LOGGER)
error_log = logging.getLogger("studio.api")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def first_header(scope: Scope, name: bytes) -> bytes | None:
    """Return the first value of the header `name` (lower case), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


def _error_body(message: str, code: str, error_type: str) -> bytes:
    """The one error shape (`studio.schemas.common.ErrorResponse`), for answers sent below FastAPI."""
    return (
        ErrorResponse(error=ErrorDetail(message=message, type=error_type, code=code))
        .model_dump_json()
        .encode()
    )


async def _send_error(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Takes or makes `X-Request-ID`, returns it, logs one JSON line per request.

    The line carries method, path, status, duration in ms, client id and request id. An unhandled
    error becomes a 500 in the error shape here, so even it carries the request id; its stack trace
    goes to the log, never to the client.
    """

    def __init__(self, app: ASGIApp, *, echo_header: bool = True) -> None:
        self.app = app
        # Serve's HTTP proxy already makes the id, passes it in, and returns it: don't add it twice.
        self.echo_header = echo_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = first_header(scope, REQUEST_ID_HEADER.encode())
        request_id = (
            given.decode("latin-1") if given and _VALID_REQUEST_ID.match(given.decode("latin-1")) else ""
        )
        request_id = request_id or uuid.uuid4().hex
        request_token = request_id_var.set(request_id)
        client_token = client_id_var.set(None)
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        started = time.perf_counter()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                if self.echo_header:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Nobody is left to answer; 499 (nginx's "client closed request") marks it in the log.
            status = 499
        except Exception:
            error_log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise
            status = 500
            body = _error_body(f"internal error (request id {request_id})", "internal_error", "server_error")
            await _send_error(
                send, 500, body, [(b"x-request-id", request_id.encode())] if self.echo_header else []
            )
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            client_id = state.get("client_id")
            if client_id is not None:
                client_id_var.set(client_id)
            access_log.info(
                "%s %s %d",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )
            client_id_var.reset(client_token)
            request_id_var.reset(request_token)


# Forms carry up to MAX_PARTS parts; every text field is at most MAX_FIELD_BYTES, plus part headers.
MULTIPART_OVERHEAD_BYTES = MAX_PARTS * MAX_FIELD_BYTES + (64 << 10)
INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
FILE_UPLOAD_PATHS = frozenset({"/v1/files", "/fine_tuning/upload-dataset"})
_UPLOAD_PART_PATH = re.compile(r"^/v1/uploads/[^/]+/parts$")


def route_path(scope: Scope) -> str:
    """Return the path the router matches: `path` without `root_path` (as Starlette's router does)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The largest request body, in bytes, by kind of route."""

    json: int
    inference: int
    upload: int  # a whole file (`datasets.max_upload_bytes`)
    part: int  # one part of an upload (`datasets.max_part_bytes`)

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        """Return the limits the settings give (`api.*_body_bytes`, `datasets.max_*_bytes`)."""
        return cls(
            json=settings.api.max_json_body_bytes,
            inference=settings.api.max_inference_body_bytes,
            upload=settings.datasets.max_upload_bytes,
            part=settings.datasets.max_part_bytes,
        )

    def for_path(self, path: str) -> int:
        """Return the limit for a route path: uploads get their file limit plus the form's overhead."""
        if path in INFERENCE_PATHS or (path.startswith("/inference/") and path.endswith("/predict")):
            return self.inference
        if path in FILE_UPLOAD_PATHS:
            return self.upload + MULTIPART_OVERHEAD_BYTES
        if _UPLOAD_PART_PATH.match(path):
            return self.part + MULTIPART_OVERHEAD_BYTES
        return self.json


class DeclaredSizeLimitMiddleware:
    """Answers 413 in the error shape when a request body is over its route's limit (`BodyLimits`).

    Every body is limited, whatever its content type. A declared Content-Length over the limit is
    refused before anything is read; a body without one (chunked) is counted as it is read, and the
    read that passes the limit raises a 413 `HTTPException` (FastAPI passes those through its body
    parsing, to the error handlers). Upload routes also enforce the exact file limits themselves,
    with their own error codes; the limit here only adds the form's overhead to those.
    """

    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limits.for_path(route_path(scope))
        declared = first_header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            message = f"request body of {int(declared)} bytes is over the limit of {max_bytes} bytes"
            await studio_error_response(PayloadTooLarge(message))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise HTTPException(413, f"request body is over the limit of {max_bytes} bytes")
            return message

        await self.app(scope, counted, send)
