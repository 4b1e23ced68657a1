"""The one table from domain errors to HTTP, and the one error shape (OpenAI's) on the wire.

Statuses and `type`s are OpenAI's: an invalid field is a 400 (as in OpenAI's API and vLLM's server, not
FastAPI's 422), `type` is the broad class (`invalid_request_error` for every refusal of the request itself,
404 and 409 included) and `code` names Mini Studio's specific reason. Every error also says whether the
`openai` SDK should retry it (`x-should-retry`, which the SDK obeys before its own rules): "false" on
permanent refusals (4xx: a 409 here is a state that a retry seconds later does not change), "true" on a
429 or 503, which carry `Retry-After`; a bare 500 leaves the SDK to its default.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StudioError,
    Unauthenticated,
    Unavailable,
)
from studio.ports import StudioMetrics
from studio.schemas.common import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    507: "server_error",
}
STATUS_OF: dict[type[StudioError], tuple[int, str]] = {
    cls: (status, TYPE_OF_STATUS[status])
    for cls, status in (
        (InvalidInput, 400),
        (BadRequest, 400),
        (Unauthenticated, 401),
        (Forbidden, 403),
        (NotFound, 404),
        (Conflict, 409),
        (PayloadTooLarge, 413),
        (QuotaExceeded, 429),
        (Unavailable, 503),
        # The disk guard (issue 11): found before Unavailable by status_of, Retry-After as Unavailable.
        (InsufficientStorage, 507),
    )
}
# The statuses a retry can cure (the answer carries Retry-After); the SDK's default would also retry
# 408, 409 and every 5xx.
RETRYABLE_STATUSES = frozenset({429, 503})
# Where error answers are counted (`count_errors`). Module-wide, because errors become responses in
# middleware too (the auth gate, body limits), before any route or app state is reached; counted by
# registration, so two apps of one process sharing a metrics object count each error once.
_counters: Counter[StudioMetrics] = Counter()


def count_errors(metrics: StudioMetrics) -> Callable[[], None]:
    """Count every error answer of this process in `metrics` (by status and code) until the returned
    function is called."""
    _counters[metrics] += 1

    def stop() -> None:
        _counters[metrics] -= 1
        if _counters[metrics] <= 0:
            del _counters[metrics]

    return stop


def _count(status: int, code: str | None) -> None:
    for metrics in list(_counters):
        try:
            metrics.api_error(status=status, code=code)
        except Exception:  # counting never fails an answer
            log.debug("counting an error answer failed", exc_info=True)


def error_response(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Return a response in OpenAI's error shape, with `x-should-retry` where the status decides it.

    Every error answer of the API is made here, so here it is counted (`count_errors`).
    """
    _count(status, code)
    body = ErrorResponse(
        error=ErrorDetail(
            message=message,
            type=error_type or TYPE_OF_STATUS.get(status, "server_error"),
            param=param,
            code=code,
        )
    )
    return JSONResponse(
        body.model_dump(), status_code=status, headers={**retry_header(status), **(headers or {})}
    )


def retry_header(status: int) -> dict[str, str]:
    """Return the `x-should-retry` header of an error status: "true" for 429/503, "false" for other 4xx,
    none for 5xx (the SDK retries those by default)."""
    if status in RETRYABLE_STATUSES:
        return {"x-should-retry": "true"}
    if 400 <= status < 500 and status != 408:
        return {"x-should-retry": "false"}
    return {}


def status_of(exc: StudioError) -> tuple[int, str]:
    """Return the HTTP status and OpenAI error `type` of a domain error (500 `server_error` if unmapped)."""
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


# The steps pydantic adds to an error's location inside a union or a validator (`constrained-int`,
# `literal['auto']`, `function-after[...]`): not fields, so not part of `param`.
_SCHEMA_STEP = re.compile(r"^(constrained-\w+|function-\w+|[a-z-]+\[.*\]|int|float|str|bool|none|list|dict)$")


def _location(loc: tuple[int | str, ...]) -> str | None:
    """Return the dotted path of the field at fault (`hyperparameters.n_epochs`), else `body` etc."""
    parts = [str(part) for part in loc[1:]] if loc and loc[0] in {"body", "query", "path", "header"} else []
    fields = [part for part in parts if not _SCHEMA_STEP.match(part)]
    return ".".join(fields) or (str(loc[0]) if loc else None)


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
    return error_response(400, message, param=param, code=str(first.get("type", "invalid")))


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
