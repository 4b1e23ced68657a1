"""The CLI's HTTP client: the public API over httpx, every call with a timeout, errors as `ApiError`.

Only what a user could do with curl: no import from the server's code, so the CLI works against any
Mini Studio it can reach.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

# Statuses a read may be retried on, after the server's Retry-After (bounded).
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 10.0


@dataclass
class ApiError(Exception):
    """An error answer (OpenAI's shape: message, type, code, param), or a server that cannot be reached."""

    message: str
    status: int | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        """Return one line for stderr: the API's message, then its code, status and request id."""
        facts = [part for part in (self.code, f"HTTP {self.status}" if self.status else None) if part]
        if self.request_id:
            facts.append(f"request {self.request_id}")
        return f"{self.message} ({', '.join(facts)})" if facts else self.message

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """Return the error carried by an error response (any body: OpenAI's shape, JSON, or text)."""
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip()
            return cls(text or response.reason_phrase or "error", response.status_code, request_id=request_id)
        return cls.from_body(body, status=response.status_code, request_id=request_id)

    @classmethod
    def from_body(cls, body: Any, *, status: int | None, request_id: str | None = None) -> ApiError:
        """Return the error in a decoded body (`{"error": {...}}`, FastAPI's `{"detail"}`, or anything)."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(
                str(error.get("message") or "error"),
                status,
                code=_str_or_none(error.get("code")),
                type=_str_or_none(error.get("type")),
                param=_str_or_none(error.get("param")),
                request_id=request_id,
            )
        if isinstance(body, dict) and "detail" in body:
            return cls(str(body["detail"]), status, request_id=request_id)
        return cls(json.dumps(body), status, request_id=request_id)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


class ApiClient:
    """Calls Mini Studio's public API with a bearer key; a context manager that closes its connections."""

    def __init__(
        self, url: str, key: str | None, *, timeout_s: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        headers = {"User-Agent": "mini-studio-cli"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = url
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            transport=transport,  # tests pass an httpx.MockTransport
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send one request and return its successful response.

        GETs answered 429/502/503/504 are retried (three tries, after Retry-After, at most 10 s each).

        Raises:
            ApiError: an error answer, or the server could not be reached or did not answer in time.
        """
        timeout = self._timeout(timeout_s)
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        tries = 3 if method == "GET" else 1
        for attempt in range(1, tries + 1):
            try:
                response = self._http.request(
                    method, path, json=json_body, params=clean, files=files, data=data, timeout=timeout
                )
            except httpx.TimeoutException:
                raise ApiError(f"{method} {path}: no answer from {self.url} in time") from None
            except httpx.TransportError as exc:
                raise ApiError(f"cannot reach Mini Studio at {self.url}: {exc}") from None
            if response.status_code < 400:
                return response
            if response.status_code in RETRYABLE and attempt < tries:
                time.sleep(retry_after_s(response))
                continue
            raise ApiError.of(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **params: Any) -> Any:
        """Return the decoded JSON of `GET path?params`. Raises: ApiError."""
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        """Return the decoded JSON of `POST path` with a JSON body. Raises: ApiError."""
        return self.request("POST", path, json_body=body, timeout_s=timeout_s).json()

    def delete(self, path: str) -> Any:
        """Return the decoded JSON of `DELETE path`. Raises: ApiError."""
        return self.request("DELETE", path).json()

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[Iterator[Any]]:
        """Open a Server-Sent Events answer; yield an iterator of its decoded `data:` events.

        The iterator ends at `data: [DONE]` or when the server closes the stream. An event in OpenAI's
        error shape is raised.

        Raises:
            ApiError: an error answer, an error event, or the server could not be reached; a read timeout
                (no byte for the client's timeout) also raises, so callers can reconnect.
        """
        try:
            with self._http.stream(
                method,
                path,
                json=json_body,
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=self._timeout(timeout_s),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.of(response)
                yield _events(response)
        except httpx.TimeoutException:
            raise ApiError(f"{method} {path}: no answer from {self.url} in time") from None
        except httpx.TransportError as exc:
            raise ApiError(f"the connection to {self.url} broke: {exc}") from None

    def _timeout(self, timeout_s: float | None) -> httpx.Timeout:
        return httpx.Timeout(timeout_s or self.timeout_s, connect=CONNECT_TIMEOUT_S)


def _events(response: httpx.Response) -> Iterator[Any]:
    """Yield the decoded `data:` payloads of an SSE response; comments (keep-alives) and ids are skipped."""
    data: list[str] = []
    for line in itertools.chain(
        response.iter_lines(), [""]
    ):  # the blank line ends a last event sent without one
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:
            continue  # a comment (keep-alive), an `id:` or `event:` field, or a blank line after nothing
        payload = "\n".join(data)
        data = []
        if payload == "[DONE]":
            return
        event = json.loads(payload)
        if isinstance(event, dict) and isinstance(event.get("error"), dict):
            raise ApiError.from_body(event, status=None)
        yield event


def retry_after_s(response: httpx.Response) -> float:
    """Return how long to wait before retrying: Retry-After in seconds (1 s if absent), at most 10 s."""
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), MAX_RETRY_WAIT_S)
