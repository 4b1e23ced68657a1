"""Copy files and folders between a node's disk and S3, for nodes that do not see the head's data directory.

Used by the trainer (datasets in, checkpoints and final models out: `studio.training.remote_files`).
boto3 is imported lazily: a run without S3 never loads it. Credentials come from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or any other source of boto3's default chain), never
from a config file; every call has connect and read timeouts and boto's standard retries.

A folder is written to S3 file by file with its `MARKER_FILE` (when it has one) last, and read back
only once that marker is there, so a reader never takes a half-uploaded checkpoint for a whole one.
Downloads go to a temporary name beside the target and are renamed into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_SCHEME = "s3://"


@dataclass(frozen=True, slots=True)
class S3Location:
    """`s3://<bucket>/<key>`: one object, or a folder when `key` is a prefix (no trailing slash)."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Return the location of `uri`. Raises ValueError for anything but `s3://bucket/key`."""
        if not uri.startswith(S3_SCHEME):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
        key = key.strip("/")
        if not bucket or not key:
            raise ValueError(f"{uri!r} names no bucket and key")
        return cls(bucket, key)

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name.strip('/')}")

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}"


def is_s3_uri(value: str | os.PathLike[str] | None) -> bool:
    """Return whether `value` is an `s3://` URI."""
    return isinstance(value, str) and value.startswith(S3_SCHEME)


def s3_client(*, endpoint_url: str | None, region: str | None, timeout_s: float) -> S3Client:
    """Return a boto3 S3 client with timeouts (path-style addressing: MinIO, SeaweedFS, Ceph, AWS)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        ),
    )


def keys_under(client: S3Client, folder: S3Location) -> dict[str, int]:
    """Return the keys under `folder` (relative to it) and their sizes."""
    found: dict[str, int] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=folder.bucket, Prefix=folder.key + "/"):
        for item in page.get("Contents", []):
            found[item["Key"].removeprefix(folder.key + "/")] = item.get("Size", 0)
    return found


def download_file(client: S3Client, source: S3Location, target: Path) -> Path:
    """Download one object to `target` (through a temporary file); return `target`.

    Raises:
        FileNotFoundError: there is no such object.
        botocore's errors: S3 is unreachable or refuses the credentials.
    """
    from botocore.exceptions import ClientError

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex}"
    try:
        client.download_file(source.bucket, source.key, str(tmp))
    except ClientError as exc:
        tmp.unlink(missing_ok=True)
        if _missing(exc):
            raise FileNotFoundError(f"{source} does not exist") from exc
        raise
    os.replace(tmp, target)
    return target


def download_folder(client: S3Client, source: S3Location, target: Path, *, marker: str | None = None) -> Path:
    """Download every object under `source` into the folder `target`, which appears whole or not at all.

    Raises:
        FileNotFoundError: nothing is stored under `source` (or its `marker` is missing).
    """
    keys = keys_under(client, source)
    if not keys or (marker is not None and marker not in keys):
        raise FileNotFoundError(f"{source} holds no complete folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex}"
    try:
        for relative in sorted(keys):
            destination = tmp / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(source.bucket, source.child(relative).key, str(destination))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def upload_folder(client: S3Client, source: Path, target: S3Location, *, marker: str | None = None) -> str:
    """Upload every file under `source` to `target` (`marker`, when there, last); return the folder's URI."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(source).as_posix() == marker)
    for file in files:
        key = target.child(file.relative_to(source).as_posix()).key
        client.upload_file(str(file), target.bucket, key)
    return str(target)


def folder_size(path: Path) -> int:
    """Return the bytes of the files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _missing(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
