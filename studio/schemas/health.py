"""Liveness and readiness reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

CheckState = Literal["ok", "degraded", "down", "disabled"]


class DependencyCheck(BaseModel):
    """One dependency's state and how long asking it took."""

    status: CheckState
    latency_ms: float | None = None
    detail: str | None = None


class Readiness(BaseModel):
    """`ok`: all required up; `degraded`: an optional dependency (cache, S3) is down; `down`: the store is."""

    status: Literal["ok", "degraded", "down"]
    checks: dict[str, DependencyCheck]
