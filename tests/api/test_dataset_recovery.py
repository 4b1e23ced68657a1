"""Work left behind by a dead replica is taken over: an unfinished validation is finished by the worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from studio.config import Settings
from tests.api.conftest import new_client, running_api
from tests.api.datasets_data import chat_rows, jsonl
from tests.conftest import make_settings


async def test_validation_abandoned_by_a_dead_replica_is_finished(tmp_path: Path, mongo_url: str) -> None:
    settings: Settings = make_settings(tmp_path, mongo_url=mongo_url, datasets={"worker_interval_s": 0.2})
    async with running_api(settings) as api:
        client_id, headers = await new_client(api)
        # What a replica that died mid-validation leaves: the file in place, the document
        # `validating` with an expired lease.
        relative = f"{client_id}/file-orphan/orphan.jsonl"
        path = settings.datasets_dir / relative
        path.parent.mkdir(parents=True)
        path.write_bytes(jsonl(chat_rows(12)))
        mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
        await mongo[settings.store.database]["fine_tuning_datasets"].insert_one(
            {
                "_id": "file-orphan",
                "client_id": client_id,
                "filename": "orphan.jsonl",
                "purpose": "fine-tune",
                "bytes": path.stat().st_size,
                "sha256": "0" * 64,
                "status": "validating",
                "lease_until": time.time() - 1,
                "local_path": relative,
                "s3": {"state": "disabled"},
                "created_at": int(time.time()),
            }
        )
        await mongo.close()
        for _ in range(50):
            found = (await api.get("/v1/files/file-orphan", headers=headers)).json()
            if found["status"] == "processed":
                break
            await asyncio.sleep(0.1)
        assert found["status"] == "processed" and found["details"]["stats"]["rows"] == 12
