"""Readiness: required down -> down; optional down -> degraded; slow -> down after its timeout."""

from __future__ import annotations

import asyncio

from studio.services.health import HealthService, Probe


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionError("refused")


async def slow() -> None:
    await asyncio.sleep(5)


async def test_all_ok() -> None:
    report = await HealthService(
        [Probe("db", ok, required=True), Probe("cache", None, required=False)]
    ).readiness()
    assert report.status == "ok"
    assert report.checks["cache"].status == "disabled"


async def test_optional_down_degrades_required_down_is_down() -> None:
    degraded = await HealthService(
        [Probe("db", ok, required=True), Probe("cache", broken, required=False)]
    ).readiness()
    assert degraded.status == "degraded" and degraded.checks["cache"].detail == "refused"
    down = await HealthService(
        [Probe("db", broken, required=True), Probe("cache", broken, required=False)]
    ).readiness()
    assert down.status == "down"


async def test_slow_dependency_times_out() -> None:
    report = await HealthService([Probe("db", slow, required=True, timeout_s=0.05)]).readiness()
    assert report.status == "down" and "no answer" in (report.checks["db"].detail or "")
