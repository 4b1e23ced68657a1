"""Deployments of models for inference: the request bodies, the stored routing record, the public view.

The stored `Deployment` is the `model_routing` document: the model name it serves, where (`target`,
`app_name` / `service_url`), how (`placement`, `base_deployment` for an adapter), its status, its owner
(a fine-tune's client) or, for a shared base, its holders.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from studio.domain.deployments import ADMIN_HOLDER, DeploymentStatus, Placement, Target
from studio.domain.serving_plan import DeploymentPlan, KvCacheDtype, Quantization

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
GIB = 1024**3


class EngineOptions(BaseModel):
    """vLLM engine arguments a deployment may set; None takes the server's default from settings."""

    model_config = ConfigDict(extra="forbid")

    max_model_len: int | None = Field(default=None, ge=16, le=1_048_576)
    dtype: Dtype = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # KV cache size on CPU machines (vLLM's `kv_cache_memory_bytes`); None: the settings' value.
    kv_cache_bytes: int | None = Field(default=None, ge=1 << 20)
    # Adapters: the largest LoRA rank it takes and how many it holds in memory at once (per replica).
    # 0: a base that takes no adapters, its engine without LoRA (base requests at plain vLLM speed).
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    max_adapters: int = Field(default=4, ge=0, le=64)
    # One engine over tp x pp workers (one GPU each). None: every GPU of the replica is a tensor-parallel
    # worker (tp = num_gpus / pp), 1 without GPUs. Stored as the planner resolved them.
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=64)
    pipeline_parallel_size: int | None = Field(default=None, ge=1, le=64)
    # vLLM quantizes the linear layers' weights to fp8 at load (GPUs only); KV cache in fp8 halves it.
    quantization: Quantization | None = None
    kv_cache_dtype: KvCacheDtype = "auto"


class DeploymentCreate(BaseModel):
    """Body of `POST /v1/deployments` (and of the original `/inference/deploy/*` paths)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=512,
        validation_alias=AliasChoices("model", "base_model", "fine_tuned_model"),
    )
    target: Target = "serve"
    # Replicas: min 0 scales to zero when idle (the first request then waits for one to start).
    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_ongoing_requests: float = Field(default=8.0, gt=0, le=10_000)
    num_cpus: float | None = Field(default=None, gt=0, le=512)
    num_gpus: float = Field(default=0.0, ge=0, le=64)
    # Memory of one GPU, for the planner's check that a replica fits (None: 80 GiB).
    gpu_memory_gib: float | None = Field(default=None, gt=0, le=4096)
    engine: EngineOptions = Field(default_factory=EngineOptions)

    @model_validator(mode="after")
    def _replicas(self) -> DeploymentCreate:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self


class DeploymentLayout(BaseModel):
    """How each replica is laid out, as the planner chose it (`GET /v1/deployments/{id}`)."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpus_per_replica: float
    # GPUs: the planner's estimate per GPU and what it was checked against (None without GPUs, or for a
    # model whose config the studio does not know).
    gpu_memory_gib: float | None = None
    usable_gib_per_gpu: float | None = None
    estimated_gib_per_gpu: float | None = None
    weights_gib_per_gpu: float | None = None
    kv_cache_gib_per_sequence: float | None = None
    max_model_len: int | None = None
    # Tokens of KV cache left per replica once the rest is loaded (its concurrency, in tokens).
    kv_cache_tokens: int | None = None

    @classmethod
    def of(cls, plan: DeploymentPlan, *, num_gpus: float, gpu_memory_gib: float) -> DeploymentLayout:
        layout = plan.layout
        fields = cls(
            tensor_parallel_size=layout.tensor_parallel_size,
            pipeline_parallel_size=layout.pipeline_parallel_size,
            gpus_per_replica=num_gpus,
        )
        memory = plan.memory
        if memory is None:
            return fields
        return fields.model_copy(
            update={
                "gpu_memory_gib": gpu_memory_gib,
                "usable_gib_per_gpu": round(memory.budget_bytes / GIB, 2),
                "estimated_gib_per_gpu": round(memory.total_bytes / GIB, 2),
                "weights_gib_per_gpu": round(memory.weights_bytes / GIB, 2),
                "kv_cache_gib_per_sequence": round(memory.kv_cache_bytes / GIB, 2),
                "max_model_len": memory.max_model_len,
                "kv_cache_tokens": memory.kv_cache_tokens,
            }
        )


class DeploymentFields(BaseModel):
    """What the stored deployment and its public view share."""

    id: str
    model: str
    kind: Literal["base", "fine-tuned"]
    base_model: str
    placement: Placement
    target: Target
    status: DeploymentStatus
    # Serve: the model server's application (for an adapter, its base's); Kubernetes: the objects' name.
    app_name: str | None = None
    # Kubernetes: the namespace of the objects and the URL of the model's Service (set once applied).
    namespace: str | None = None
    service_url: str | None = None
    base_deployment: str | None = None
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    num_cpus: float
    num_gpus: float
    engine: EngineOptions
    # None: an adapter (it runs in its base's replicas), or a record written before layouts were planned.
    layout: DeploymentLayout | None = None
    error: str | None = None
    created_at: int
    ready_at: int | None = None


class Deployment(DeploymentFields):
    """A deployment as stored in `model_routing` (`_id` = `id`; `model` is unique among records)."""

    # A fine-tune's owner. A shared base's creator (a client, or `ADMIN_HOLDER`), which grants nothing:
    # what keeps a base running is `holders`.
    client_id: str
    # A shared base (kind "base"): the clients holding it, and `ADMIN_HOLDER` when an admin deployed it.
    # Empty for a fine-tune. Changed only by the store's `add_holder` / `drop_holder` (atomic).
    holders: list[str] = Field(default_factory=list)
    # What the server loads: the base model's directory or hub id, or the fine-tune's final directory.
    model_source: str
    adapter_path: str | None = None
    # The S3 copies of `model_source` (a full fine-tune) and `adapter_path` (the job's `output_model_uri`):
    # a model server on a node without that directory loads them through its node's cache.
    model_uri: str | None = None
    adapter_uri: str | None = None
    updated_at: int

    @model_validator(mode="before")
    @classmethod
    def _creator_holds_legacy_bases(cls, data: Any) -> Any:
        # A base recorded before holders existed is held by the client that created it. An empty list
        # is not the same: it is a base whose last holder just let go.
        if isinstance(data, dict) and data.get("kind") == "base" and "holders" not in data:
            return {**data, "holders": [data["client_id"]]} if "client_id" in data else data
        return data

    @property
    def shared(self) -> bool:
        """Whether this is a shared base (one server for every client allowed the model)."""
        return self.kind == "base"

    def held_by(self, holder: str) -> bool:
        """Return whether `holder` (a client id or `ADMIN_HOLDER`) keeps this deployment: a holder of a
        shared base, the owner of anything else."""
        return holder in self.holders if self.shared else self.client_id == holder


class DeploymentChanges(BaseModel):
    """Fields a deployment update sets; only those given are written (`exclude_unset`)."""

    status: DeploymentStatus | None = None
    error: str | None = None
    namespace: str | None = None
    service_url: str | None = None
    updated_at: int | None = None
    ready_at: int | None = None


_PRIVATE = {"client_id", "holders", "model_source", "adapter_path", "model_uri", "adapter_uri", "updated_at"}


class DeploymentPublic(DeploymentFields):
    object: Literal["deployment"] = "deployment"
    # A base model's deployment, shared by every client allowed the model and owned by none.
    shared: bool = False
    # Whether the caller holds it (a fine-tune: its owner does); undeploying a shared base drops the
    # caller's hold, and the server stops once no client holds it.
    held: bool = False
    # A shared base: how many holders keep it (clients, and an admin's deploy counts one).
    references: int | None = None

    @classmethod
    def of(cls, deployment: Deployment, *, viewer: str) -> DeploymentPublic:
        """Return the deployment as `viewer` (a client id, or `ADMIN_HOLDER`) sees it."""
        return cls.model_validate(
            deployment.model_dump(exclude=_PRIVATE)
            | {
                "shared": deployment.shared,
                "held": deployment.held_by(viewer),
                "references": len(deployment.holders) if deployment.shared else None,
            }
        )


class DeploymentAdminPublic(DeploymentPublic):
    """A deployment as an admin sees it: who created it and who holds it."""

    client_id: str
    holders: list[str]

    @classmethod
    def of_record(cls, deployment: Deployment) -> DeploymentAdminPublic:
        public = DeploymentPublic.of(deployment, viewer=ADMIN_HOLDER)
        return cls.model_validate(
            public.model_dump() | {"client_id": deployment.client_id, "holders": deployment.holders}
        )


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentPublic]
    has_more: bool = False


class DeploymentAdminList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentAdminPublic]
    has_more: bool = False
