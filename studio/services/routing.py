"""The routing table an ingress replica keeps in memory, so no inference request waits on the database.

A background task reads the table's version (one indexed read) every `refresh_s` and reloads the
records when it changed; a replica that changes a deployment itself reloads at once. Waiters (requests
for a model still deploying) are woken on every reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from studio.errors import StudioError
from studio.ports import DeploymentRepository
from studio.schemas.deployments import Deployment

log = logging.getLogger(__name__)


class RoutingTable:
    def __init__(self, *, deployments: DeploymentRepository, refresh_s: float) -> None:
        self._deployments = deployments
        self._refresh_s = refresh_s
        self._routes: dict[str, Deployment] = {}
        self._version = -1
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def lookup(self, model: str) -> Deployment | None:
        """Return the deployment that serves `model`, as of the last reload."""
        return self._routes.get(model)

    async def start(self) -> None:
        """Load the table (errors are logged, not raised: the loop retries) and follow its version."""
        with contextlib.suppress(StudioError):
            await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        # The flag as well as the cancel: a cancel that lands inside a database call can be swallowed
        # by the driver, and the loop would then go on (and this `await` never return).
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self, *, force: bool = False) -> None:
        """Reload the records if the version changed (or when `force`), then wake the waiters.

        Raises:
            Unavailable: the database did not answer.
        """
        version = await self._deployments.version()
        if version == self._version and not force:
            return
        records = await self._deployments.list()
        self._routes = {record.model: record for record in records}
        self._version = version
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return at the next reload, or after `timeout_s`."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout_s)

    async def _follow(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except StudioError as exc:
                log.warning("routing table refresh failed: %s", exc)
