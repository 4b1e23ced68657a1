"""`/v1/me`: the calling client, its limits. The cheapest authenticated endpoint."""

from __future__ import annotations

from fastapi import APIRouter

from studio.api.deps import PrincipalDep
from studio.schemas.clients import ClientPublic

router = APIRouter(prefix="/v1", tags=["clients"])


@router.get("/me")
async def me(principal: PrincipalDep) -> ClientPublic:
    return ClientPublic.of(principal.client)
