"""Session-wide real servers: MongoDB wire protocol (SecantusDB), redis-server, SeaweedFS S3."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from studio.config import Settings, load_settings
from tests import servers

# The Serve app's session fixtures, shared by tests/integration and tests/browser (one Ray cluster).
pytest_plugins = ["tests.serve_fixtures"]


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str

    def client(self) -> Any:
        """A boto3 S3 client of this server, with its keys (what tests read and write the bucket with)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def put_folder(self, prefix: str, files: dict[str, bytes]) -> str:
        """Store `files` (relative name -> bytes) under `prefix` in the bucket; return its `s3://` URI."""
        client = self.client()
        for name, body in files.items():
            client.put_object(Bucket=self.bucket, Key=f"{prefix}/{name}", Body=body)
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def mongo_url(workdir: Path) -> Iterator[str]:
    external = os.environ.get("STUDIO_TEST_MONGO_URL")
    if external:
        yield external
        return
    server = servers.mongo_server(workdir).start()
    yield servers.mongo_url_of(server)
    server.stop()


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    external = os.environ.get("STUDIO_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = servers.redis_server(workdir).start()
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(workdir: Path) -> Iterator[S3Endpoint]:
    bucket = "studio-test"
    external = os.environ.get("STUDIO_TEST_S3_ENDPOINT")
    if external:
        yield S3Endpoint(
            external,
            os.environ["STUDIO_TEST_S3_ACCESS_KEY"],
            os.environ["STUDIO_TEST_S3_SECRET_KEY"],
            os.environ.get("STUDIO_TEST_S3_BUCKET", bucket),
        )
        return
    server = servers.s3_server(workdir, bucket=bucket).start()
    yield S3Endpoint(f"http://127.0.0.1:{server.port}", servers.S3_ACCESS_KEY, servers.S3_SECRET_KEY, bucket)
    server.stop()


def make_settings(
    data_dir: Path,
    *,
    mongo_url: str | None,
    redis_url: str | None = None,
    s3: S3Endpoint | None = None,
    s3_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for one test: its own data directory and its own database."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_key": "test-admin-key-0123456789",
        "store": {"mongo_url": mongo_url, "database": f"t_{uuid.uuid4().hex[:12]}"},
        # Its own Ray namespace too: the tracker stops the runs of its namespace that its store does not
        # account for, and tests share one Ray cluster.
        "ray": {"namespace": f"ms-t-{uuid.uuid4().hex[:12]}"},
        "redis": {"url": redis_url},
        # The disk guard's floor, low enough for a CI machine's small disk (its own tests raise it).
        "storage": {"min_free_bytes": 256 * 1024**2, "min_free_percent": 0},
    }
    if s3 is not None:
        values["s3"] = {
            "endpoint_url": s3.endpoint_url,
            "bucket": s3.bucket,
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
            **(s3_options or {}),
        }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(**values)
