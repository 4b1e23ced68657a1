"""Downloads name the file in Content-Disposition (RFC 6266), whatever characters its name has."""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx
import pytest

from studio.api.routes.files import attachment_disposition
from tests.api.conftest import new_client
from tests.api.datasets_data import chat_rows, jsonl


def exact_name(disposition: str) -> str | None:
    """The name an RFC 6266 client takes: `filename*` (RFC 5987, UTF-8) wins over `filename`."""
    match = re.search(r"(?:^|;)\s*filename\*=UTF-8''([^;\s]+)", disposition)
    return None if match is None else unquote(match.group(1), errors="strict")


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [
        ("train.jsonl", "train.jsonl"),
        ("données_日本.jsonl", "donnees___.jsonl"),
        ('say "hi" 100%.jsonl', "say _hi_ 100_.jsonl"),
        ("a;b,c\\d.jsonl", "a;b,c_d.jsonl"),
    ],
)
def test_disposition_has_an_ascii_fallback_and_the_exact_name(filename: str, fallback: str) -> None:
    value = attachment_disposition(filename)
    value.encode("latin-1")  # a header value must be Latin-1; ours is ASCII
    assert value.isascii()
    assert value.startswith(f"attachment; filename=\"{fallback}\"; filename*=UTF-8''")
    assert exact_name(value) == filename


async def test_unicode_file_name_downloads_with_rfc_6266_header(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api)
    body = jsonl(chat_rows(5))
    created = await api.post(
        "/v1/files",
        files={"file": ("données_日本.jsonl", body)},
        data={"purpose": "fine-tune"},
        headers=headers,
    )
    assert created.status_code == 200, created.text
    assert created.json()["filename"] == "données_日本.jsonl"
    download = await api.get(f"/v1/files/{created.json()['id']}/content", headers=headers)
    assert download.status_code == 200
    assert download.content == body
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"donnees___.jsonl\"; filename*=UTF-8''donn%C3%A9es_%E6%97%A5%E6%9C%AC.jsonl"
    )
    assert exact_name(download.headers["content-disposition"]) == "données_日本.jsonl"
