"""`ObjectStore` on S3 with boto3, run in worker threads with timeouts and retries."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from studio.blocking import BlockingCalls
from studio.config import S3Settings
from studio.errors import NotFound, Unavailable
from studio.training.s3_objects import S3Location, download_folder

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3ObjectStore:
    def __init__(self, client: S3Client, *, bucket: str, timeout_s: float) -> None:
        self._s3 = client
        self._bucket = bucket
        self._timeout_s = timeout_s
        # boto retries for tens of seconds inside one call: an unreachable store holds these threads only.
        self._calls = BlockingCalls("the object store", max_threads=8)
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK
        )

    @classmethod
    async def connect(cls, settings: S3Settings) -> S3ObjectStore:
        """Return a store for the configured bucket, creating the bucket when allowed and missing.

        A store that cannot reach S3 at start is still returned: S3 is a mirror, and `/readyz`
        reports it as degraded until it answers.
        """
        if settings.bucket is None:
            raise ValueError("S3ObjectStore needs STUDIO_S3__BUCKET")
        client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id.get_secret_value() if settings.access_key_id else None,
            aws_secret_access_key=(
                settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
            ),
            config=Config(
                connect_timeout=settings.timeout_s,
                read_timeout=settings.timeout_s,
                retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )
        store = cls(client, bucket=settings.bucket, timeout_s=settings.timeout_s)
        if settings.create_bucket:
            with contextlib.suppress(Unavailable):
                await store._ensure_bucket()
        return store

    @property
    def bucket(self) -> str:
        return self._bucket

    async def _run(self, func: Any, *args: Any, budget_s: float | None = None, **kwargs: Any) -> Any:
        try:
            return await self._calls.run_within(budget_s or self._timeout_s * 3, func, *args, **kwargs)
        except TimeoutError as exc:
            raise Unavailable("object store timed out") from exc
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise
            raise Unavailable(f"object store error: {exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise Unavailable(f"object store unavailable: {exc}") from exc

    async def _ensure_bucket(self) -> None:
        try:
            await self._run(self._s3.head_bucket, Bucket=self._bucket)
        except ClientError:
            await self._run(self._s3.create_bucket, Bucket=self._bucket)

    async def put_file(self, *, key: str, path: Path) -> str:
        # Big files take longer than one request's timeout: allow one minute per 64 MiB on top.
        size = await asyncio.to_thread(os.path.getsize, path)
        budget = self._timeout_s * 3 + 60 * (size // MULTIPART_THRESHOLD + 1)
        await self._run(
            self._s3.upload_file, str(path), self._bucket, key, Config=self._transfer, budget_s=budget
        )
        return f"s3://{self._bucket}/{key}"

    async def put_directory(self, *, prefix: str, path: Path) -> str:
        files = await asyncio.to_thread(lambda: sorted(p for p in path.rglob("*") if p.is_file()))
        for file in files:
            await self.put_file(key=f"{prefix}/{file.relative_to(path).as_posix()}", path=file)
        return f"s3://{self._bucket}/{prefix}"

    async def get_file(self, *, key: str, path: Path) -> None:
        await self._run(
            self._s3.download_file, self._bucket, key, str(path), Config=self._transfer, budget_s=3600
        )

    async def get_directory(self, *, prefix: str, path: Path) -> None:
        folder = S3Location(self._bucket, prefix.strip("/"))
        try:
            await self._run(download_folder, self._s3, folder, path, budget_s=3600)
        except FileNotFoundError as exc:
            raise NotFound(f"nothing in {folder}", code="model_files_missing") from exc

    async def exists(self, key: str) -> bool:
        try:
            await self._run(self._s3.head_object, Bucket=self._bucket, Key=key)
        except ClientError:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._run(self._s3.delete_object, Bucket=self._bucket, Key=key)

    async def ping(self) -> None:
        try:
            await self._run(self._s3.head_bucket, Bucket=self._bucket)
        except ClientError as exc:
            raise Unavailable(f"bucket {self._bucket!r} is missing") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._s3.close)
