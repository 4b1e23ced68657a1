"""The CLI's HTTP client against a mock transport: errors in OpenAI's shape, retries, Server-Sent Events."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest

from studio.cli.client import ApiClient, ApiError
from studio.cli.uploads import SliceReader


def client(handler: httpx.MockTransport) -> ApiClient:
    return ApiClient("http://studio.test", "sk-test", timeout_s=5, transport=handler)


def test_an_error_answer_becomes_the_apis_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer sk-test"
        body = {"error": {"message": "no job 'x'", "type": "not_found", "param": "job_id", "code": "job_nf"}}
        return httpx.Response(404, json=body, headers={"x-request-id": "req-1"})

    with client(httpx.MockTransport(handler)) as api, pytest.raises(ApiError) as caught:
        api.get("/v1/fine_tuning/jobs/x")
    error = caught.value
    assert (error.message, error.status, error.code, error.param) == ("no job 'x'", 404, "job_nf", "job_id")
    assert error.describe() == "no job 'x' (job_nf, HTTP 404, request req-1)"


def test_reads_are_retried_after_retry_after_and_writes_are_not() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1 or request.method == "POST":
            return httpx.Response(503, json={"error": {"message": "busy"}}, headers={"retry-after": "0"})
        return httpx.Response(200, json={"ok": True})

    with client(httpx.MockTransport(handler)) as api:
        assert api.get("/v1/files") == {"ok": True}
        with pytest.raises(ApiError, match="busy"):
            api.post("/v1/files")
    assert calls == ["GET", "GET", "POST"]


def test_an_unreachable_server_is_an_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with client(httpx.MockTransport(handler)) as api, pytest.raises(ApiError, match="cannot reach"):
        api.get("/v1/me")


def test_server_sent_events_skip_comments_stop_at_done_and_raise_error_events() -> None:
    body = (
        ': keep-alive\n\ndata: {"n": 1}\n\nid: 7\ndata: {"n":\ndata: 2}\n\ndata: [DONE]\n\ndata: {"n": 3}\n\n'
    )
    api = client(httpx.MockTransport(lambda r: httpx.Response(200, text=body)))
    with api, api.stream("GET", "/events") as events:
        assert list(events) == [{"n": 1}, {"n": 2}]

    # The error event is the last, without the blank line that should end it.
    failing = 'data: {"n": 1}\n\ndata: {"error": {"message": "model failed", "code": "x"}}'
    api = client(httpx.MockTransport(lambda r: httpx.Response(200, text=failing)))
    with api, api.stream("POST", "/v1/chat/completions") as events:
        assert next(events) == {"n": 1}
        with pytest.raises(ApiError, match="model failed"):
            next(events)

    refused = httpx.MockTransport(lambda r: httpx.Response(409, json={"error": {"message": "not deployed"}}))
    api = client(refused)
    with api, pytest.raises(ApiError, match="not deployed"), api.stream("POST", "/v1/chat/completions"):
        pass


def test_a_part_is_a_slice_of_the_file_with_its_own_length_and_hash() -> None:
    data = bytes(range(256)) * 40
    seen: list[int] = []
    before = hashlib.md5(data[:1000], usedforsecurity=False)
    reader = SliceReader(io.BytesIO(data), start=1000, length=3000, on_read=seen.append, md5_before=before)
    sent = httpx.Request("POST", "http://x/", files={"data": ("a.jsonl", reader)})
    assert int(sent.headers["content-length"]) < 3300  # measured by seeking: the slice, not the file
    body = sent.read()
    assert data[1000:4000] in body and data[999:4000] not in body
    assert reader.md5.hexdigest() == hashlib.md5(data[:4000], usedforsecurity=False).hexdigest()
    assert seen[-1] == 3000
    json.dumps(seen)  # plain ints, for the progress bar
