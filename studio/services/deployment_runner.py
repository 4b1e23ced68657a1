"""The tracker's deployment loop: brings every deployment's model server in line with its record.

Each round reads the records that are not settled (`deploying`, `deleting`), and every
`ready_check_interval_s` the `ready` ones too, and steps each concurrently (a slow model start never
holds up another deployment); a thousand ready deployments cost one query per check, not per round:
- `deploying`, own server: deploy it if Serve does not have it; once running, wait for a replica to
  report ready, then `ready`; a server Serve reports failed, or one not ready in `deploy_timeout_s`
  (whatever happens meanwhile: a target that keeps raising too), is removed and the record `failed`
  with the reason;
- `deploying`, adapter: wait for its base; once the base is ready, load the adapter into it (a bad
  adapter fails the record with the reason, the base serves on);
- `ready`, own server: a server that vanished (Serve restarted, deleted by hand) is deployed again;
- `deleting`: remove the server (or forget the adapter), then the record.
A restarted tracker picks up where the records say, so an ingress or tracker restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from studio.domain.deployments import DeploymentStatus, check_deployment_transition
from studio.errors import Conflict, Forbidden, InvalidInput, NotFound, StudioError
from studio.ports import DeploymentRepository, ModelServers
from studio.schemas.deployments import Deployment, DeploymentChanges

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


class DeploymentRunner:
    def __init__(
        self,
        *,
        deployments: DeploymentRepository,
        servers: ModelServers,
        poll_interval_s: float,
        deploy_timeout_s: float,
        ready_check_interval_s: float = 30.0,
    ) -> None:
        self._deployments = deployments
        self._servers = servers
        self._poll_interval_s = poll_interval_s
        self._deploy_timeout_s = deploy_timeout_s
        self._ready_check_interval_s = ready_check_interval_s
        self._ready_checked_at = float("-inf")
        self._wake = asyncio.Event()
        self._steps: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def wake(self) -> None:
        """Start the next round now."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the round in progress (steps already started run on)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run rounds until `stop` (or cancelled)."""
        while not self._stopping:
            try:
                await self.round()
            except StudioError as exc:  # the store is down: try again next round
                log.warning("deployment round failed: %s", exc)
            except Exception:  # never let one bad round end the loop (and the tracker with it)
                log.exception("deployment round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            self._wake.clear()

    async def round(self) -> None:
        """Start a step for every unsettled deployment (and, now and then, every ready one) without one."""
        statuses: list[DeploymentStatus] = ["deploying", "deleting"]
        now = time.monotonic()
        if now - self._ready_checked_at >= self._ready_check_interval_s:
            statuses.append("ready")
            self._ready_checked_at = now
        for deployment in await self._deployments.list_in(statuses):
            task = self._steps.get(deployment.id)
            if task is None or task.done():
                self._steps[deployment.id] = asyncio.create_task(self._guarded(deployment))
        for key in [key for key, task in self._steps.items() if task.done()]:
            del self._steps[key]

    async def settle(self) -> None:
        """Wait for the steps in flight (tests and shutdown)."""
        if self._steps:
            await asyncio.gather(*self._steps.values(), return_exceptions=True)

    async def _guarded(self, deployment: Deployment) -> None:
        try:
            await self.step(deployment)
        except StudioError as exc:
            log.warning("deployment step failed: %s", exc, extra={"deployment_id": deployment.id})
        except Exception:
            log.exception("deployment step failed", extra={"deployment_id": deployment.id})

    async def step(self, deployment: Deployment) -> None:
        """Move one deployment one step towards what its record asks for."""
        if deployment.status == "deleting":
            try:
                await self._servers.remove(deployment)
            except StudioError as exc:
                # Every state has a deadline: a removal that keeps failing ends `failed`, with the reason.
                if time.time() - deployment.updated_at <= self._deploy_timeout_s:
                    raise
                await self._fail(
                    deployment,
                    f"the model server could not be removed within {self._deploy_timeout_s:.0f} s "
                    f"({exc.message}); delete it again to retry",
                )
                return
            await self._deployments.remove(deployment.id)
            log.info("deployment removed", extra={"deployment_id": deployment.id})
        elif deployment.placement == "adapter":
            if deployment.status == "deploying":
                await self._attach(deployment)
        elif deployment.status == "deploying":
            await self._start(deployment)
        elif deployment.status == "ready":
            state, _ = await self._servers.state(deployment)
            if state == "absent":
                log.warning(
                    "model server vanished; deploying it again", extra={"deployment_id": deployment.id}
                )
                await self._move(deployment, "deploying")

    async def _start(self, deployment: Deployment) -> None:
        # The deadline comes first: a target that keeps raising must not keep a record deploying forever.
        if await self._failed_past_deadline(deployment):
            with contextlib.suppress(StudioError):
                await self._servers.remove(deployment)
            return
        state, message = await self._servers.state(deployment)
        if state == "absent":
            try:
                where = await self._servers.deploy(deployment)
            except (Conflict, Forbidden, InvalidInput, NotFound) as exc:
                # The target refused it (no cluster configured, a missing permission, a name taken by an
                # object Mini Studio does not manage, a bad value): retrying will not help.
                await self._fail(deployment, exc.message)
                return
            if where is not None:  # where it lives (Kubernetes: namespace, Service URL)
                await self._deployments.update(
                    deployment_id=deployment.id, expected="deploying", changes=where
                )
            return
        if state == "failed":
            await self._fail(deployment, message or "the model server failed to start")
            await self._servers.remove(deployment)
            return
        if state == "running":
            # Serve says running once replicas are constructed; a replica answering `ready` has its
            # engine and OpenAI layer up (and with min_replicas 0, this call starts one).
            await self._servers.ready(deployment)
            await self._move(deployment, "ready")

    async def _failed_past_deadline(self, deployment: Deployment) -> bool:
        """Fail a record deploying for longer than `deploy_timeout_s`; return whether it was past it."""
        if time.time() - deployment.updated_at <= self._deploy_timeout_s:
            return False
        await self._fail(deployment, f"the model server was not ready within {self._deploy_timeout_s:.0f} s")
        return True

    async def _attach(self, adapter: Deployment) -> None:
        if await self._failed_past_deadline(adapter):
            return
        base = await self._deployments.get(adapter.base_deployment or "")
        if base is None or base.status in ("deleting", "failed"):
            reason = "was removed" if base is None else f"is {base.status}"
            await self._fail(adapter, f"its base deployment {adapter.base_deployment} {reason}")
            return
        if base.status != "ready":
            return  # the base is still starting: next round
        try:
            await self._servers.attach(adapter)
        except InvalidInput as exc:
            await self._fail(adapter, exc.message)
            return
        await self._move(adapter, "ready")

    async def _move(self, deployment: Deployment, status: DeploymentStatus, error: str | None = None) -> None:
        check_deployment_transition(deployment.status, status)
        now = int(time.time())
        changes = DeploymentChanges(status=status, error=error, updated_at=now)
        if status == "ready":
            changes.ready_at = now
        updated = await self._deployments.update(
            deployment_id=deployment.id, expected=deployment.status, changes=changes
        )
        if updated is not None:
            log.info(
                "deployment %s", status, extra={"deployment_id": deployment.id, "model": deployment.model}
            )

    async def _fail(self, deployment: Deployment, reason: str) -> None:
        reason = " ".join(reason.split())[:MAX_ERROR_CHARS]
        await self._move(deployment, "failed", error=reason)
