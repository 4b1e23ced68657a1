"""Clients (tenants) and their API keys: create bodies, stored documents and public views."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClientLimits(BaseModel):
    """What a client may use. Stored in `client_config` with the client."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int = Field(default=2, ge=0, le=10_000)
    max_deployments: int = Field(default=2, ge=0, le=10_000)
    # In total over the client's deployments (its own and the shared bases it holds), each counted at its
    # max_replicas: replicas, and replicas x num_cpus / num_gpus. Past one: 429 naming it.
    max_deployment_replicas: int = Field(default=8, ge=0, le=100_000)
    max_deployment_cpus: float = Field(default=32.0, ge=0, le=1_000_000)
    max_deployment_gpus: float = Field(default=8.0, ge=0, le=100_000)
    # Jobs waiting in the queue (created, not yet launched); more are refused with 429 until some launch.
    max_queued_jobs: int = Field(default=1000, ge=0, le=1_000_000)
    requests_per_minute: int = Field(default=600, ge=1, le=10_000_000)
    # Storage: bytes of files held (pending uploads count their declared size), files held (pending
    # uploads count as one each), uploads (/v1/uploads) pending at once. Past one: 403
    # `storage_quota_exceeded`, naming the limit, its value and what is used.
    max_stored_bytes: int = Field(default=100 * 1024**3, ge=0, le=1 << 60)
    max_files: int = Field(default=10_000, ge=0, le=100_000_000)
    max_uploads_in_progress: int = Field(default=20, ge=0, le=100_000)
    allowed_base_models: list[str] = Field(default_factory=lambda: ["*"], max_length=1000)


class ClientCreate(BaseModel):
    """Body of `POST /admin/clients`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    limits: ClientLimits | None = None


class ClientUpdate(BaseModel):
    """Body of `PATCH /admin/clients/{id}`: `name` replaces, `limits` given are merged into the stored."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    limits: ClientLimits | None = None


class Client(BaseModel):
    """A client as stored in `client_config` (its `id` is the document `_id`)."""

    id: str
    name: str
    limits: ClientLimits
    disabled: bool = False
    created_at: int


class ClientPublic(BaseModel):
    """A client as returned by the API."""

    object: Literal["client"] = "client"
    id: str
    name: str
    limits: ClientLimits
    disabled: bool
    created_at: int

    @classmethod
    def of(cls, client: Client) -> ClientPublic:
        return cls(**client.model_dump())


class ApiKeyCreate(BaseModel):
    """Body of `POST /admin/clients/{id}/keys` (may be empty)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=200)


class ApiKey(BaseModel):
    """A key as stored in `api_keys`: the hash only, never the secret."""

    id: str
    client_id: str
    name: str
    key_hash: str
    hint: str
    disabled: bool = False
    created_at: int


class ApiKeyPublic(BaseModel):
    """A key as listed: no secret."""

    object: Literal["api_key"] = "api_key"
    id: str
    client_id: str
    name: str
    hint: str
    disabled: bool
    created_at: int

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyPublic:
        return cls(**key.model_dump(exclude={"key_hash"}))


class ApiKeyCreated(ApiKeyPublic):
    """A key as created: the only response that carries `secret`."""

    secret: str


class Principal(BaseModel):
    """Who is calling: the authenticated client and the key it used."""

    client: Client
    key_id: str
