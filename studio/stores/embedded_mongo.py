"""The embedded MongoDB-compatible server (SecantusDB: WiredTiger storage, MongoDB wire protocol).

Used when no MongoDB URL is configured. One process of the cluster runs it (`studio.app.embedded`
puts it in a detached Ray actor); everything else connects over the wire like to any MongoDB, so the
application has one code path. SecantusDB is GPL-2.0-only and ships as the optional `embedded` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from studio.errors import Unavailable

log = logging.getLogger(__name__)


class EmbeddedMongoServer:
    """Starts and stops a SecantusDB server whose files live under `storage_path`."""

    def __init__(self, *, storage_path: Path, host: str, port: int, cache_size: str) -> None:
        self._storage_path = storage_path
        self._host = host
        self._port = port
        self._cache_size = cache_size
        self._server: Any = None

    def start(self) -> int:
        """Start serving; return the bound port.

        Raises:
            Unavailable: the `embedded` extra is not installed, or the port or files cannot be used.
        """
        try:
            from secantus import SecantusDBServer
        except ImportError as exc:
            raise Unavailable(
                "no MongoDB configured and the embedded server is not installed: "
                "set STUDIO_STORE__MONGO_URL or `pip install 'mini-studio[embedded]'`"
            ) from exc
        self._storage_path.mkdir(parents=True, exist_ok=True)
        # Durable storage: a write acknowledged with j=True survives kill -9 of this process.
        server = SecantusDBServer(
            host=self._host,
            port=self._port,
            storage_path=str(self._storage_path),
            enable_test_commands=False,
            cache_size=self._cache_size,
            durable=True,
        )
        try:
            server.start()
        except OSError as exc:
            raise Unavailable(f"embedded MongoDB cannot listen on {self._host}:{self._port}: {exc}") from exc
        self._server = server
        port: int = server.address[1]
        log.info("embedded MongoDB serving %s on port %d", self._storage_path, port)
        return port

    def stop(self) -> None:
        """Stop serving and close the files cleanly."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def embedded_uri(host: str, port: int) -> str:
    """Return the connection string for the embedded server reachable at `host:port`."""
    # The server advertises a one-member replica set named after its bind address; connecting
    # directly keeps drivers from chasing that advertised address (0.0.0.0 when bound to all).
    return f"mongodb://{host}:{port}/?directConnection=true"
