"""The one table from domain errors to HTTP, and the one error shape (OpenAI's) on the wire."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StudioError,
    Unauthenticated,
    Unavailable,
)
from studio.schemas.common import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

STATUS_OF: dict[type[StudioError], tuple[int, str]] = {
    InvalidInput: (422, "invalid_request_error"),
    BadRequest: (400, "invalid_request_error"),
    Unauthenticated: (401, "authentication_error"),
    Forbidden: (403, "permission_error"),
    NotFound: (404, "not_found_error"),
    Conflict: (409, "conflict_error"),
    PayloadTooLarge: (413, "invalid_request_error"),
    QuotaExceeded: (429, "rate_limit_error"),
    Unavailable: (503, "service_unavailable_error"),
}

TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_response(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Return a response in OpenAI's error shape."""
    body = ErrorResponse(
        error=ErrorDetail(
            message=message,
            type=error_type or TYPE_OF_STATUS.get(status, "server_error"),
            param=param,
            code=code,
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_of(exc: StudioError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500, "server_error"


def studio_error_response(exc: StudioError) -> JSONResponse:
    """Return the answer to a domain error: its status from the table, Retry-After where it applies.

    Used by the exception handler and by middleware that answers before FastAPI (the auth gate).
    """
    status, error_type = status_of(exc)
    headers = None
    if isinstance(exc, Unavailable | QuotaExceeded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__ is not None)
    return error_response(
        status, exc.message, error_type=error_type, param=exc.param, code=exc.code, headers=headers
    )


async def _studio_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StudioError)
    return studio_error_response(exc)


def _location(loc: tuple[int | str, ...]) -> str | None:
    parts = [str(part) for part in loc[1:]] if loc and loc[0] in {"body", "query", "path", "header"} else []
    return ".".join(parts) or (str(loc[0]) if loc else None)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if first.get("type") == "json_invalid":
        return error_response(400, f"malformed JSON body: {first.get('msg')}", code="invalid_json")
    param = _location(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_response(422, message, param=param, code=str(first.get("type", "invalid")))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # 413: a chunked body passed its limit while FastAPI read it (`DeclaredSizeLimitMiddleware`).
    code = "payload_too_large" if exc.status_code == 413 else None
    return error_response(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error OpenAI's shape."""
    app.add_exception_handler(StudioError, _studio_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
