"""Datasets through Serve's HTTP proxy with the official `openai` SDK, and a client that hangs up."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import openai
import pytest

from tests.api.datasets_data import broken_on_line_7, chat_rows, jsonl
from tests.conftest import S3Endpoint
from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(http: httpx.Client, serve_app: ServeApp) -> tuple[str, str]:
    client = http.post("/admin/clients", json={"name": "files"}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{client['id']}/keys", headers=serve_app.admin).json()["secret"]
    return client["id"], key


def test_openai_sdk_files_round_trip_with_s3_copy(
    serve_app: ServeApp, tenant: tuple[str, str], s3_endpoint: S3Endpoint
) -> None:
    client = openai.OpenAI(api_key=tenant[1], base_url=f"{serve_app.url}/v1", max_retries=0)
    body = jsonl(chat_rows(25, seed=42))
    created = client.files.create(file=("serve.jsonl", body), purpose="fine-tune")
    assert created.status == "processed"
    assert [item.id for item in client.files.list().data] == [created.id]
    assert client.files.content(created.id).content == body
    for _ in range(100):
        found = client.files.retrieve(created.id).model_dump()
        if found["details"]["s3"]["state"] == "mirrored":
            break
        time.sleep(0.1)
    key = f"{tenant[0]}/{created.id}/serve.jsonl"
    assert found["details"]["s3"]["uri"] == f"s3://{s3_endpoint.bucket}/{key}"
    s3 = s3_endpoint.client()
    assert s3.get_object(Bucket=s3_endpoint.bucket, Key=key)["Body"].read() == body

    broken = client.files.create(file=("broken.jsonl", broken_on_line_7()), purpose="fine-tune")
    assert broken.status == "error"
    assert broken.model_dump()["details"]["errors"][0]["line"] == 7

    assert client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_client_hanging_up_mid_upload_leaves_nothing(serve_app: ServeApp, tenant: tuple[str, str]) -> None:
    url = urlparse(serve_app.url)
    boundary = "hangup"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n'
    ).encode()
    declared = len(head) + 10_000_000
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            (
                f"POST /v1/files HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: Bearer {tenant[1]}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + head
            + jsonl(chat_rows(2000))
        )
        time.sleep(1.0)
    time.sleep(2.0)
    listed = httpx.get(f"{serve_app.url}/v1/files", headers={"Authorization": f"Bearer {tenant[1]}"}).json()
    assert listed["data"] == []
    client_dir = serve_app.settings.datasets_dir / tenant[0]
    leftovers = [path for path in client_dir.rglob("*") if path.is_file()] if client_dir.exists() else []
    assert leftovers == []
