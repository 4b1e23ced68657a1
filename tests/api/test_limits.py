"""Request body limits by route, for every content type: declared sizes before reading, chunked as counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from studio.api.middleware import MULTIPART_OVERHEAD_BYTES, BodyLimits
from studio.config import Settings
from tests.api.conftest import new_client, running_api, started_app
from tests.api.raw_asgi import call_without_body
from tests.api.test_auth import assert_error
from tests.conftest import make_settings

KIB = 1024
OCTETS = {"content-type": "application/octet-stream"}


def small_limits(tmp_path: Path, mongo_url: str) -> Settings:
    return make_settings(
        tmp_path,
        mongo_url=mongo_url,
        api={"max_inference_body_bytes": 64 * KIB},
        datasets={"max_upload_bytes": 256 * KIB, "max_part_bytes": 128 * KIB},
    )


async def chunked(total: int, chunk: int = 16 * KIB) -> AsyncIterator[bytes]:
    """`total` bytes sent without a Content-Length (chunked)."""
    for start in range(0, total, chunk):
        yield b"x" * min(chunk, total - start)


def test_each_kind_of_route_has_its_limit() -> None:
    limits = BodyLimits(json=1, inference=2, upload=3, part=4)
    assert limits.for_path("/v1/chat/completions") == 2
    assert limits.for_path("/v1/completions") == 2
    assert limits.for_path("/inference/org/model-7b/predict") == 2
    assert limits.for_path("/v1/files") == 3 + MULTIPART_OVERHEAD_BYTES
    assert limits.for_path("/fine_tuning/upload-dataset") == 3 + MULTIPART_OVERHEAD_BYTES
    assert limits.for_path("/v1/uploads/upload-abc/parts") == 4 + MULTIPART_OVERHEAD_BYTES
    for path in (
        "/admin/clients",
        "/v1/uploads",
        "/v1/uploads/upload-abc/complete",
        "/inference/deploy/base",
    ):
        assert limits.for_path(path) == 1, path


async def test_chunked_octet_stream_over_the_inference_limit_is_413(tmp_path: Path, mongo_url: str) -> None:
    async with running_api(small_limits(tmp_path, mongo_url)) as api:
        _, headers = await new_client(api)
        response = await api.post(
            "/v1/chat/completions", content=chunked(256 * KIB), headers={**OCTETS, **headers}
        )
    error = assert_error(response, 413)
    assert error["type"] == "invalid_request_error" and error["code"] == "payload_too_large"


async def test_declared_sizes_over_the_route_limit_are_413_before_reading(
    tmp_path: Path, mongo_url: str
) -> None:
    settings = small_limits(tmp_path, mongo_url)
    async with started_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as api:
            _, headers = await new_client(api)
        over = {
            "/v1/chat/completions": 64 * KIB + 1,
            "/inference/some-model/predict": 64 * KIB + 1,
            "/v1/files": 256 * KIB + MULTIPART_OVERHEAD_BYTES + 1,
            "/fine_tuning/upload-dataset": 256 * KIB + MULTIPART_OVERHEAD_BYTES + 1,
            "/v1/uploads/upload-x/parts": 128 * KIB + MULTIPART_OVERHEAD_BYTES + 1,
        }
        for path, size in over.items():
            for content_type in ("application/octet-stream", "multipart/form-data; boundary=b"):
                answer = await call_without_body(
                    app, "POST", path, {"content-type": content_type, "content-length": str(size), **headers}
                )
                assert (answer.status, answer.receive_calls) == (413, 0), (path, content_type)
                error = answer.json()["error"]
                assert isinstance(error, dict) and error["code"] == "payload_too_large"


async def test_inference_bodies_may_be_bigger_than_json_bodies(settings: Settings) -> None:
    async with running_api(settings) as api:
        _, headers = await new_client(api)
        big = json.dumps({"model": "no-such-model", "prompt": "x" * (2 * 1024 * KIB)}).encode()
        assert len(big) > settings.api.max_json_body_bytes
        answer = await api.post(
            "/v1/completions", content=big, headers={"content-type": "application/json", **headers}
        )
    assert answer.status_code != 413
    assert answer.json()["error"]["code"] != "payload_too_large"


async def test_upload_over_the_file_limit_still_gets_the_routes_own_answer(
    tmp_path: Path, mongo_url: str
) -> None:
    # Under the file limit plus the form's overhead the route reads on and answers with its own code.
    async with running_api(small_limits(tmp_path, mongo_url)) as api:
        _, headers = await new_client(api)
        response = await api.post(
            "/v1/files",
            files={"file": ("big.jsonl", b"{}\n" * (100 * KIB))},
            data={"purpose": "fine-tune"},
            headers=headers,
        )
    assert_error(response, 413, "file_too_large")
