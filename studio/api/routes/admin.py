"""Admin endpoints: clients (tenants) and their API keys. Need the admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from studio.api.deps import AdminDep, ClientsDep
from studio.schemas.clients import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    ClientCreate,
    ClientPublic,
    ClientUpdate,
)
from studio.schemas.common import Page

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post("/clients", status_code=201)
async def create_client(body: ClientCreate, clients: ClientsDep) -> ClientPublic:
    return ClientPublic.of(await clients.create_client(body))


@router.get("/clients")
async def list_clients(
    clients: ClientsDep,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[ClientPublic]:
    rows, has_more = await clients.list_clients(after=after, limit=limit)
    return Page(data=[ClientPublic.of(row) for row in rows], has_more=has_more)


@router.get("/clients/{client_id}")
async def get_client(client_id: str, clients: ClientsDep) -> ClientPublic:
    return ClientPublic.of(await clients.get_client(client_id))


@router.patch("/clients/{client_id}")
async def update_client(client_id: str, body: ClientUpdate, clients: ClientsDep) -> ClientPublic:
    return ClientPublic.of(await clients.update_client(client_id, body))


@router.post("/clients/{client_id}/disable")
async def disable_client(client_id: str, clients: ClientsDep) -> ClientPublic:
    return ClientPublic.of(await clients.set_client_disabled(client_id, disabled=True))


@router.post("/clients/{client_id}/enable")
async def enable_client(client_id: str, clients: ClientsDep) -> ClientPublic:
    return ClientPublic.of(await clients.set_client_disabled(client_id, disabled=False))


@router.post("/clients/{client_id}/keys", status_code=201)
async def create_key(client_id: str, clients: ClientsDep, body: ApiKeyCreate | None = None) -> ApiKeyCreated:
    return await clients.create_key(client_id, body or ApiKeyCreate())


@router.get("/clients/{client_id}/keys")
async def list_keys(client_id: str, clients: ClientsDep) -> Page[ApiKeyPublic]:
    return Page(data=[ApiKeyPublic.of(key) for key in await clients.list_keys(client_id)])


@router.post("/clients/{client_id}/keys/{key_id}/disable")
async def disable_key(client_id: str, key_id: str, clients: ClientsDep) -> ApiKeyPublic:
    return ApiKeyPublic.of(await clients.set_key_disabled(client_id, key_id, disabled=True))
