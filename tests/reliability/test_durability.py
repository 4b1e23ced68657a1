"""Journaled writes: what the store acknowledged survives kill -9 of the database server."""

from __future__ import annotations

from pathlib import Path

from studio.config import StoreSettings
from studio.domain.ids import new_id, unix_now
from studio.schemas.clients import Client, ClientLimits
from studio.stores.mongo import MongoStore
from tests import servers


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = servers.mongo_server(tmp_path).start()
    url = servers.mongo_url_of(server)
    settings = StoreSettings(database="durability")
    store = await MongoStore.connect(url, settings)
    written = []
    for index in range(100):
        client = Client(id=new_id("client"), name=f"c{index}", limits=ClientLimits(), created_at=unix_now())
        await store.clients.insert_client(client)
        written.append(client.id)
    await store.close()
    server.kill()

    server.start()
    store = await MongoStore.connect(url, settings)
    stored = await store.clients.list_clients(after=None, limit=1000)
    await store.close()
    server.stop()
    assert sorted(client.id for client in stored) == sorted(written)
