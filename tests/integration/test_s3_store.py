"""The S3 adapter against SeaweedFS, which checks SigV4 signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.config import S3Settings
from studio.errors import Unavailable
from studio.stores.s3 import S3ObjectStore
from tests.conftest import S3Endpoint


def s3_settings(endpoint: S3Endpoint, **overrides: object) -> S3Settings:
    values: dict[str, object] = {
        "endpoint_url": endpoint.endpoint_url,
        "bucket": endpoint.bucket,
        "access_key_id": endpoint.access_key,
        "secret_access_key": endpoint.secret_key,
        "timeout_s": 5,
    }
    return S3Settings.model_validate({**values, **overrides})


async def test_put_get_delete_round_trip(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    store = await S3ObjectStore.connect(s3_settings(s3_endpoint))
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"messages": []}\n' * 1000)
    uri = await store.put_file(key="client-1/ds-1/data.jsonl", path=source)
    assert uri == f"s3://{s3_endpoint.bucket}/client-1/ds-1/data.jsonl"
    assert await store.exists("client-1/ds-1/data.jsonl")
    target = tmp_path / "back.jsonl"
    await store.get_file(key="client-1/ds-1/data.jsonl", path=target)
    assert target.read_bytes() == source.read_bytes()
    await store.delete("client-1/ds-1/data.jsonl")
    assert not await store.exists("client-1/ds-1/data.jsonl")
    await store.close()


async def test_new_bucket_is_created(s3_endpoint: S3Endpoint) -> None:
    store = await S3ObjectStore.connect(s3_settings(s3_endpoint, bucket="studio-created"))
    await store.ping()
    await store.close()


async def test_wrong_secret_is_refused_as_unavailable(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    store = await S3ObjectStore.connect(
        s3_settings(s3_endpoint, secret_access_key="wrong-secret", max_attempts=1)
    )
    source = tmp_path / "x"
    source.write_bytes(b"x")
    with pytest.raises(Unavailable, match="SignatureDoesNotMatch"):
        await store.put_file(key="x", path=source)
    await store.close()
