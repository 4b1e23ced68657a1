"""The embedded MongoDB server as a detached, named Ray actor: one per cluster, on the head node.

Every ingress replica (and later every tracking actor) asks the same actor for its address, so they
all share one database whose files live under the data directory and survive restarts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from studio.app.singletons import head_node_singleton
from studio.config import Settings
from studio.errors import Unavailable
from studio.stores.embedded_mongo import EmbeddedMongoServer, embedded_uri

EMBEDDED_MONGO_ACTOR = "studio-embedded-mongodb"
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


class EmbeddedMongoActor:
    """Runs `EmbeddedMongoServer` for the lifetime of the cluster."""

    def __init__(self, *, storage_path: str, host: str, port: int, cache_size: str) -> None:
        from pathlib import Path

        self._server = EmbeddedMongoServer(
            storage_path=Path(storage_path), host=host, port=port, cache_size=cache_size
        )
        self._port = self._server.start()
        node_ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self._host = node_ip if host in WILDCARD_HOSTS else host

    def uri(self) -> str:
        return embedded_uri(self._host, self._port)

    def __ray_shutdown__(self) -> None:
        self._server.stop()


async def embedded_mongo_url(settings: Settings) -> str:
    """Return the URL of the cluster's embedded MongoDB server, starting it when it is not running.

    Raises:
        Unavailable: the server could not start (not installed, port taken) or did not answer in time.
    """
    # Its files are on the head node's disk: the singleton stays there.
    actor_class = head_node_singleton(
        EmbeddedMongoActor, name=EMBEDDED_MONGO_ACTOR, namespace=settings.ray.namespace
    )
    actor: Any = actor_class.remote(
        storage_path=str(settings.data_dir / "mongodb"),
        host=settings.store.embedded_host,
        port=settings.store.embedded_port,
        cache_size=settings.store.embedded_cache_size,
    )
    try:
        url: str = await asyncio.wait_for(actor.uri.remote(), timeout=settings.store.embedded_start_timeout_s)
    except TimeoutError as exc:
        raise Unavailable("the embedded MongoDB server did not start in time") from exc
    except ray.exceptions.RayActorError as exc:
        raise Unavailable(f"the embedded MongoDB server failed to start: {exc}") from exc
    return url
