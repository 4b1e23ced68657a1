"""Readiness: asks each dependency, in parallel, how it is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from studio.schemas.health import DependencyCheck, Readiness


@dataclass(frozen=True, slots=True)
class Probe:
    """One dependency: its ping, and what its failure means (`down` for required, `degraded` if not)."""

    name: str
    ping: Callable[[], Awaitable[None]] | None
    required: bool
    timeout_s: float = 2.0


class HealthService:
    """Builds the `/readyz` report."""

    def __init__(self, probes: list[Probe]) -> None:
        self._probes = probes

    async def readiness(self) -> Readiness:
        """Return each dependency's state and the overall one."""
        results = await asyncio.gather(*(self._check(probe) for probe in self._probes))
        checks = dict(zip((probe.name for probe in self._probes), results, strict=True))
        overall: Literal["ok", "degraded", "down"] = "ok"
        for probe, check in zip(self._probes, results, strict=True):
            if check.status != "down":
                continue
            if probe.required:
                overall = "down"
            elif overall == "ok":
                overall = "degraded"
        return Readiness(status=overall, checks=checks)

    @staticmethod
    async def _check(probe: Probe) -> DependencyCheck:
        if probe.ping is None:
            return DependencyCheck(status="disabled", detail="not configured")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(probe.timeout_s):
                await probe.ping()
        except TimeoutError:
            return DependencyCheck(status="down", detail=f"no answer within {probe.timeout_s:g} s")
        except Exception as exc:
            return DependencyCheck(status="down", detail=str(exc)[:300] or type(exc).__name__)
        latency = round((time.perf_counter() - started) * 1000, 2)
        return DependencyCheck(status="ok", latency_ms=latency)
