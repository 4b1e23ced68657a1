"""The ingress's side of the tracker actor: wake it on change, and keep it alive.

`TrackerWatch` is how a killed or stuck tracker heals without anyone creating something: every
ingress replica calls the actor's `start` every `liveness_interval_s` (which starts its loop when it
is not running, and hands over the settings of a newer deployment of Mini Studio), and creates the
actor again when Ray reports it dead for good. `ActorJobNotifier` is the `JobNotifier` port on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import ray

from studio.errors import Unavailable

log = logging.getLogger(__name__)

ActorFactory = Callable[[], Any]


class TrackerWatch:
    """Holds the tracker actor's handle and checks it is alive; `run()` is the periodic check."""

    def __init__(
        self, create: ActorFactory, *, start_args: tuple[Any, ...], interval_s: float, timeout_s: float
    ) -> None:
        self._create = create
        self._start_args = start_args
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._actor: Any = create()

    @property
    def actor(self) -> Any:
        return self._actor

    async def check(self) -> bool:
        """Make sure the tracker's loop runs; return whether it is connected and running rounds.

        A dead actor (its restarts used up, or killed with `no_restart`) is created again; one that
        does not answer in time is left to Ray and asked again next time.
        """
        try:
            return bool(
                await asyncio.wait_for(self._actor.start.remote(*self._start_args), timeout=self._timeout_s)
            )
        except ray.exceptions.RayActorError:
            log.warning("the job tracker actor is dead; creating it again")
            self._actor = self._create()
        except (TimeoutError, ray.exceptions.RayError) as exc:
            log.warning("the job tracker did not answer its liveness check: %s", exc)
        return False

    async def run(self) -> None:
        """Check now and then every `interval_s`, until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TrackerWatch]:
        """Run the periodic check in the background for the duration of the block."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ActorJobNotifier:
    """`JobNotifier` that calls the tracker actor."""

    def __init__(self, watch: TrackerWatch) -> None:
        self._watch = watch

    async def wake(self, client_id: str | None = None) -> None:
        """Ask the tracker for a round now, without waiting for its answer: a create or cancel is not
        held up by the actor's round trip, and a tracker that misses the call finds the job at its next
        round anyway (the watch recreates a dead one)."""
        try:
            self._watch.actor.wake.remote(client_id)
        except ray.exceptions.RayActorError as exc:
            raise Unavailable(f"the job tracker is not running: {exc}") from exc
