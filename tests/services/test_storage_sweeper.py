"""The storage sweeper on the real MongoDB-protocol server and a real directory: expired uploads, orphans,
missing files, the lease that lets one replica sweep, and the app's background loop that runs it."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from studio.config import StorageSettings, StoreSettings
from studio.domain.ids import new_id, unix_now
from studio.schemas.datasets import Dataset, S3Mirror, Upload
from studio.services.storage_sweeper import UPLOAD_SWEEP_MARGIN_S, StorageSweeper, parts_dir
from studio.stores.local_files import LocalFileStore
from studio.stores.mongo import MongoStore
from tests.api.conftest import new_client, running_api
from tests.conftest import make_settings

GRACE_S = 3600.0


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[MongoStore]:
    opened = await MongoStore.connect(mongo_url, StoreSettings(database=f"t_{uuid.uuid4().hex[:12]}"))
    yield opened
    await opened.close()


def sweeper(store: MongoStore, files: LocalFileStore, *, interval_s: float = 300.0) -> StorageSweeper:
    return StorageSweeper(
        datasets=store.datasets,
        uploads=store.uploads,
        files=files,
        leases=store.leases,
        settings=StorageSettings(orphan_grace_s=GRACE_S, sweep_interval_s=interval_s),
        holder=new_id("replica"),
    )


def put(root: Path, relative: str, *, age_s: float = 0.0) -> Path:
    """Write a small file at `relative` under `root`, everything on its path `age_s` old."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"{}\n")
    when = time.time() - age_s
    for each in (path, path.parent, path.parent.parent):
        os.utime(each, (when, when))
    return path


def a_dataset(client_id: str, name: str = "d.jsonl") -> Dataset:
    dataset_id = new_id("file")
    return Dataset(
        id=dataset_id,
        client_id=client_id,
        filename=name,
        bytes=3,
        sha256=uuid.uuid4().hex,
        status="ready",
        local_path=f"{client_id}/{dataset_id}/{name}",
        s3=S3Mirror(state="disabled"),
        created_at=unix_now(),
    )


def an_upload(client_id: str, *, expires_at: int) -> Upload:
    return Upload(
        id=new_id("upload"),
        client_id=client_id,
        filename="u.jsonl",
        purpose="fine-tune",
        bytes=6,
        mime_type="application/jsonl",
        status="pending",
        created_at=expires_at - 3600,
        expires_at=expires_at,
    )


async def test_a_sweep_removes_expired_uploads_and_old_orphans_and_marks_missing_files(
    store: MongoStore, tmp_path: Path
) -> None:
    root = tmp_path / "datasets"
    files = LocalFileStore(root)
    client = new_id("client")
    now = unix_now()
    expired = an_upload(client, expires_at=now - UPLOAD_SWEEP_MARGIN_S - 60)
    just_expired = an_upload(client, expires_at=now - 5)  # within the margin: a `complete` may be running
    live = an_upload(client, expires_at=now + 3600)
    for item in (expired, just_expired, live):
        await store.uploads.insert(item)
        put(root, f"{parts_dir(client, item.id)}/{new_id('part')}", age_s=2 * GRACE_S)
    present, missing = a_dataset(client), a_dataset(client)
    for item in (present, missing):
        await store.datasets.insert(item)
    put(root, present.local_path, age_s=2 * GRACE_S)  # old, but recorded: kept
    old_orphan = f"{client}/{new_id('file')}"
    put(root, f"{old_orphan}/lost.jsonl", age_s=2 * GRACE_S)
    young_orphan = f"{client}/{new_id('file')}"
    put(root, f"{young_orphan}/.upload", age_s=10)  # a body being received right now
    orphan_parts = parts_dir(client, new_id("upload"))
    put(root, f"{orphan_parts}/{new_id('part')}", age_s=2 * GRACE_S)
    put(root, f"{client}/notes/readme.txt", age_s=2 * GRACE_S)  # not named like an id: never touched

    report = await sweeper(store, files).sweep()

    assert report.expired_uploads == 1
    assert await store.uploads.get(client_id=client, upload_id=expired.id) is None
    assert not (root / parts_dir(client, expired.id)).exists()
    for kept in (just_expired, live):
        assert await store.uploads.get(client_id=client, upload_id=kept.id) is not None
        assert any((root / parts_dir(client, kept.id)).iterdir())
    assert sorted(report.orphans_removed) == sorted([old_orphan, orphan_parts])
    assert not (root / old_orphan).exists() and not (root / orphan_parts).exists()
    assert (root / young_orphan / ".upload").exists() and (root / client / "notes" / "readme.txt").exists()
    assert (root / present.local_path).exists()
    assert report.missing_files == [missing.id]
    marked = await store.datasets.get(client_id=client, dataset_id=missing.id)
    assert marked is not None and marked.missing_since is not None  # reported, not deleted
    unmarked = await store.datasets.get(client_id=client, dataset_id=present.id)
    assert unmarked is not None and unmarked.missing_since is None

    again = await sweeper(store, files).sweep()  # idempotent: nothing left to do, nothing reported twice
    assert (again.expired_uploads, again.orphans_removed, again.missing_files) == (0, [], [])
    still = await store.datasets.get(client_id=client, dataset_id=missing.id)
    assert still is not None and still.missing_since == marked.missing_since

    put(root, missing.local_path)
    back = await sweeper(store, files).sweep()
    assert back.found_again == [missing.id]
    found = await store.datasets.get(client_id=client, dataset_id=missing.id)
    assert found is not None and found.missing_since is None


async def test_one_replica_sweeps_per_interval(store: MongoStore, tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path / "datasets")
    replicas = [sweeper(store, files, interval_s=0.5) for _ in range(3)]
    reports = await asyncio.gather(*(replica.sweep_if_due() for replica in replicas))
    assert sum(report is not None for report in reports) == 1
    assert [await replica.sweep_if_due() for replica in replicas] == [None, None, None]
    await asyncio.sleep(0.6)  # the lease runs out: the next replica to ask sweeps
    assert sum([await replica.sweep_if_due() is not None for replica in replicas]) == 1


async def test_the_dataset_worker_runs_the_sweep(tmp_path: Path, mongo_url: str) -> None:
    settings = make_settings(
        tmp_path,
        mongo_url=mongo_url,
        datasets={"worker_interval_s": 0.1},
        storage={"sweep_interval_s": 0.1},
    )
    async with running_api(settings) as api:
        client_id, headers = await new_client(api)
        create = {"filename": "u.jsonl", "purpose": "fine-tune", "bytes": 6}
        upload_id = (await api.post("/v1/uploads", json=create, headers=headers)).json()["id"]
        part = await api.post(f"/v1/uploads/{upload_id}/parts", files={"data": b"{}\n"}, headers=headers)
        assert part.status_code == 200, part.text
        kept = await api.post(
            "/v1/files", files={"file": ("k.jsonl", b"{}\n")}, data={"purpose": "fine-tune"}, headers=headers
        )
        assert kept.status_code == 200, kept.text
        assert settings.store.mongo_url is not None
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.store.mongo_url.get_secret_value()
        )
        try:
            uploads = mongo[settings.store.database]["uploads"]
            await uploads.update_one(
                {"_id": upload_id}, {"$set": {"expires_at": unix_now() - UPLOAD_SWEEP_MARGIN_S - 60}}
            )
            parts = settings.datasets_dir / parts_dir(client_id, upload_id)
            for _ in range(100):
                if await uploads.find_one({"_id": upload_id}) is None and not parts.exists():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the worker never swept the expired upload")
        finally:
            await mongo.close()
        listed = (await api.get("/v1/files", headers=headers)).json()["data"]
        assert [item["id"] for item in listed] == [kept.json()["id"]]  # a recorded file stays
