"""`/healthz` (the process answers) and `/readyz` (each dependency's state). No key needed."""

from __future__ import annotations

from fastapi import APIRouter, Response

from studio.api.deps import HealthDep
from studio.schemas.health import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Readiness}})
async def readyz(health: HealthDep, response: Response) -> Readiness:
    report = await health.readiness()
    if report.status == "down":
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return report
