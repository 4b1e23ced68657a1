"""Fine-tuning jobs: OpenAI's create body (both hyperparameter spellings) and the stored job.

The request accepts OpenAI's legacy top-level `hyperparameters` and the newer
`method: {type: supervised, supervised: {hyperparameters}}` or `method: {type: dpo, dpo: {hyperparameters}}`
(DPO adds `beta`); `resolved_hyperparameters` folds them into one shape with Mini Studio's LoRA
settings, and the stored `Hyperparameters` carry the method type (`method_type`) and DPO's `beta`, so
the rest of the code sees one shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.domain.jobs import ErrorKind, JobStatus, LauncherKind
from studio.domain.queue import MAX_PRIORITY, MIN_PRIORITY
from studio.schemas.queue import QueuePosition

Auto = Literal["auto"]
PositiveEpochs = Annotated[int, Field(ge=1, le=100)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
LrMultiplier = Annotated[float, Field(gt=0, le=100)]
DpoBeta = Annotated[float, Field(gt=0, le=10)]
MethodType = Literal["supervised", "dpo"]
FineTuningMethod = Literal["lora", "full", "qlora"]
Sharding = Literal["ddp", "fsdp"]
# What "auto" means for DPO's beta: the value of the DPO paper's experiments, OpenAI's and TRL's default.
DEFAULT_DPO_BETA = 0.1


class HyperparametersIn(BaseModel):
    """Hyperparameters as sent: numbers or "auto", plus Mini Studio's LoRA and method settings.

    Mini Studio's extensions: `fine_tuning_method` ("qlora": LoRA on a 4-bit NF4 base, CUDA GPUs only),
    `gradient_checkpointing` and `micro_batch_size` (a divisor of `batch_size`: the step runs as
    batch_size / micro_batch_size accumulated micro-batches); "auto" lets the planner turn them on
    when the job would not fit otherwise. `lora_target_modules` may be ["all-linear"].
    """

    model_config = ConfigDict(extra="forbid")

    n_epochs: PositiveEpochs | Auto = "auto"
    batch_size: BatchSize | Auto = "auto"
    learning_rate_multiplier: LrMultiplier | Auto = "auto"
    fine_tuning_method: FineTuningMethod = "lora"
    gradient_checkpointing: bool | Auto = "auto"
    micro_batch_size: BatchSize | Auto = "auto"
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, max_length=32
    )


class DpoHyperparametersIn(HyperparametersIn):
    """DPO's hyperparameters as sent: OpenAI's `beta` (number or "auto") beside the supervised ones."""

    beta: DpoBeta | Auto = "auto"


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparametersIn = Field(default_factory=DpoHyperparametersIn)


class MethodIn(BaseModel):
    """OpenAI's `method`: its `type`, and the settings of that type only."""

    model_config = ConfigDict(extra="forbid")

    type: MethodType
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> MethodIn:
        other = "dpo" if self.type == "supervised" else "supervised"
        if getattr(self, other) is not None:
            raise ValueError(f'method.{other} is given, but method.type is "{self.type}"')
        return self

    def hyperparameters(self) -> HyperparametersIn:
        """Return the hyperparameters of the method's type (its defaults when none were sent)."""
        if self.type == "dpo":
            return (self.dpo or DpoMethod()).hyperparameters
        return (self.supervised or SupervisedMethod()).hyperparameters


WandbName = Annotated[str, Field(min_length=1, max_length=128)]


class WandbRunSettings(BaseModel):
    """OpenAI's `FineTuningJobWandbIntegration`: where the job's W&B run goes (`name`: the job id)."""

    model_config = ConfigDict(extra="forbid")

    project: WandbName
    name: WandbName | None = None
    entity: WandbName | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None, max_length=20)


class WandbIntegration(BaseModel):
    """OpenAI's `integrations[]` entry for Weights & Biases; stored on the job and echoed as sent."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["wandb"]
    wandb: WandbRunSettings


WandbIntegrationIn = WandbIntegration


class JobCreate(BaseModel):
    """Body of `POST /v1/fine_tuning/jobs` (and of the original `/fine_tuning/submit-finetune`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
    training_file: str = Field(min_length=1, max_length=100)
    validation_file: str | None = Field(default=None, max_length=100)
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: str | None = Field(default=None, max_length=40)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    # One W&B run per job: a second entry would log the same metrics twice.
    integrations: list[WandbIntegration] | None = Field(default=None, max_length=1)
    priority: int = Field(
        default=0,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="Mini Studio: orders the client's own queued jobs (higher first); never other clients'",
    )

    @model_validator(mode="after")
    def _one_hyperparameter_spelling(self) -> JobCreate:
        if self.hyperparameters is not None and self.method is not None:
            raise ValueError("send hyperparameters either at the top level or under method.<type>, not both")
        return self

    @property
    def method_type(self) -> MethodType:
        """Return the method's type: "supervised" unless `method` says otherwise."""
        return self.method.type if self.method is not None else "supervised"

    def resolved_hyperparameters(self) -> HyperparametersIn:
        """Return the hyperparameters from whichever spelling was used (defaults when none).

        A DPO job's are a `DpoHyperparametersIn`.
        """
        if self.method is not None:
            return self.method.hyperparameters()
        return self.hyperparameters or HyperparametersIn()


class SeedJobCreate(JobCreate):
    """Body of the original `/fine_tuning/submit-finetune`: OpenAI's, or `base_model` and `dataset_id`."""

    @model_validator(mode="before")
    @classmethod
    def _seed_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for seed, openai in (("base_model", "model"), ("dataset_id", "training_file")):
                if seed in data and openai not in data:
                    data[openai] = data.pop(seed)
        return data


class Hyperparameters(BaseModel):
    """Hyperparameters with every "auto" decided (stored on the job, shown by OpenAI's API).

    `method_type` is OpenAI's `method.type`; `beta` is DPO's, set exactly when the type is "dpo".
    Both default to a supervised job's, as documents stored before DPO existed are. A QLoRA job is a
    LoRA job (`fine_tuning_method` "lora": its result is an ordinary adapter) with `quantization`
    "nf4". `gradient_checkpointing` and `micro_batch_size` (None: the whole batch) are as planned;
    "auto" only between `decide_hyperparameters` and the planner, which replaces it (a stored job
    never has it).
    """

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    fine_tuning_method: Literal["lora", "full"]
    quantization: Literal["nf4"] | None = None
    gradient_checkpointing: bool | Auto = False
    micro_batch_size: int | Auto | None = None
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]
    method_type: MethodType = "supervised"
    beta: float | None = None

    @model_validator(mode="after")
    def _beta_for_dpo_only(self) -> Hyperparameters:
        if (self.method_type == "dpo") != (self.beta is not None):
            raise ValueError("beta is set for DPO jobs, and for them only")
        return self

    @property
    def public_method(self) -> FineTuningMethod:
        """Return the method as the user names it: "qlora" for a LoRA job on a quantized base."""
        return "qlora" if self.quantization is not None else self.fine_tuning_method

    @property
    def accumulation_steps(self) -> int:
        """Return how many micro-batches make one step (1 when the batch runs whole)."""
        micro = self.micro_batch_size if isinstance(self.micro_batch_size, int) else self.batch_size
        return max(1, self.batch_size // micro)


class JobError(BaseModel):
    """Why a job failed: a user error (data, hyperparameters) or a platform error (worker lost)."""

    code: str
    message: str
    param: str | None = None
    kind: ErrorKind


class JobResources(BaseModel):
    """What a job asks of the cluster, decided from the estimate when it is created."""

    accelerator: str
    workers: int
    num_cpus_per_worker: float
    num_gpus_per_worker: float
    memory_per_worker_bytes: int
    estimated_wall_time_s: float
    precision: Literal["bf16", "fp32"]
    # How the workers share the model: "ddp" (each holds all of it) or "fsdp" (each holds 1/workers).
    sharding: Sharding = "ddp"
    # Which launcher started the current attempt (`jobs_api` or `actor`); None until launched.
    launcher: LauncherKind | None = None


class JobProgress(BaseModel):
    """The latest figures the training process reported."""

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    checkpoint_step: int | None = None


class Job(BaseModel):
    """A job as stored in `fine_tuning_jobs` (`_id` = `id`).

    `attempts` counts Ray jobs launched for it (retries included); `ray_job_id` is the current one and
    `log_offset` how far its log has been read for events.
    """

    id: str
    client_id: str
    model: str
    training_file: str
    validation_file: str | None
    status: JobStatus
    hyperparameters: Hyperparameters
    suffix: str | None
    seed: int
    metadata: dict[str, str] = Field(default_factory=dict)
    fine_tuned_model: str | None = None
    error: JobError | None = None
    ray_job_id: str | None = None
    attempts: int = 0
    log_offset: int = 0
    resources: JobResources | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    output_dir: str | None = None
    trained_tokens: int | None = None
    # OpenAI's: file ids of the job's step-metrics CSV (purpose `fine-tune-results`).
    result_files: list[str] = Field(default_factory=list)
    # Mini Studio's: where the final model (adapter or full weights) lies on the cluster's disk.
    output_model_path: str | None = None
    # Its S3 copy (`s3://<bucket>/<client>/jobs/<job>/final`), once complete: what a node without the
    # shared data folder loads.
    output_model_uri: str | None = None
    # OpenAI's: the integrations the job was created with (a W&B run), echoed by the API.
    integrations: list[WandbIntegration] = Field(default_factory=list)
    # When its fine-tuned model was deleted (`DELETE /v1/models/{id}`): the model no longer lists.
    model_deleted_at: int | None = None
    # Cancelled while its Ray job could not be stopped (Jobs API down): the tracker stops it later.
    stop_pending: bool = False
    launcher: LauncherKind | None = None
    # The queue's order within a client: higher `priority` first, then creation order. `created_ns`
    # breaks ties inside one second (`created_at` is OpenAI's whole seconds); 0 on older documents.
    priority: int = 0
    created_ns: int = 0
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_path_out_of_result_files(cls, data: Any) -> Any:
        # Jobs stored before result files were files kept the final model's path in `result_files`.
        if isinstance(data, dict) and data.get("output_model_path") is None:
            paths = [f for f in data.get("result_files") or [] if isinstance(f, str) and f.startswith("/")]
            if paths:
                data = {**data, "output_model_path": paths[0]}
                data["result_files"] = [f for f in data["result_files"] if f not in paths]
        return data


class JobChanges(BaseModel):
    """Fields a job update sets; only those given are written (`model_dump(exclude_unset=True)`)."""

    status: JobStatus | None = None
    fine_tuned_model: str | None = None
    error: JobError | None = None
    ray_job_id: str | None = None
    attempts: int | None = None
    log_offset: int | None = None
    progress: JobProgress | None = None
    output_dir: str | None = None
    trained_tokens: int | None = None
    result_files: list[str] | None = None
    output_model_path: str | None = None
    output_model_uri: str | None = None
    model_deleted_at: int | None = None
    stop_pending: bool | None = None
    launcher: LauncherKind | None = None
    started_at: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None


class PublicHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class PublicSupervised(BaseModel):
    hyperparameters: PublicHyperparameters


class PublicDpoHyperparameters(PublicHyperparameters):
    beta: float


class PublicDpo(BaseModel):
    hyperparameters: PublicDpoHyperparameters


class PublicMethod(BaseModel):
    """OpenAI's `method` of a job: its type, and the settings of that type (the other one is null)."""

    type: MethodType = "supervised"
    supervised: PublicSupervised | None = None
    dpo: PublicDpo | None = None

    @classmethod
    def of(cls, hp: Hyperparameters) -> PublicMethod:
        """Return the method of a job with the decided hyperparameters `hp`."""
        common = PublicHyperparameters(
            n_epochs=hp.n_epochs,
            batch_size=hp.batch_size,
            learning_rate_multiplier=hp.learning_rate_multiplier,
        )
        if hp.method_type == "dpo" and hp.beta is not None:
            dpo = PublicDpoHyperparameters(**common.model_dump(), beta=hp.beta)
            return cls(type="dpo", dpo=PublicDpo(hyperparameters=dpo))
        return cls(type="supervised", supervised=PublicSupervised(hyperparameters=common))


class PublicError(BaseModel):
    code: str
    message: str
    param: str | None = None
    kind: ErrorKind


class JobPublic(BaseModel):
    """OpenAI's `fine_tuning.job`, plus Mini Studio's `ray_job_id`, `resources`, `progress`, `attempts`,
    `priority` and, for a job waiting in the queue, `queue`."""

    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    created_at: int
    error: PublicError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: PublicHyperparameters
    method: PublicMethod
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[WandbIntegration] = Field(default_factory=list)
    metadata: dict[str, str] | None
    user_provided_suffix: str | None
    fine_tuning_method: FineTuningMethod
    lora: dict[str, Any] | None
    ray_job_id: str | None
    attempts: int
    resources: JobResources | None
    progress: JobProgress
    priority: int
    output_model_path: str | None = None
    output_model_uri: str | None = None
    queue: QueuePosition | None = None

    @classmethod
    def of(cls, job: Job, *, queue: QueuePosition | None = None) -> JobPublic:
        """Return `job` as the API shows it; `queue`: where it waits (on the retrieve route only)."""
        hp = job.hyperparameters
        public_hp = PublicHyperparameters(
            n_epochs=hp.n_epochs,
            batch_size=hp.batch_size,
            learning_rate_multiplier=hp.learning_rate_multiplier,
        )
        lora = None
        if hp.fine_tuning_method == "lora":  # QLoRA too
            lora = {"r": hp.lora_r, "alpha": hp.lora_alpha, "dropout": hp.lora_dropout,
                    "target_modules": hp.lora_target_modules}  # fmt: skip
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=PublicError(**job.error.model_dump()) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=job.finished_at,
            hyperparameters=public_hp,
            method=PublicMethod.of(hp),
            model=job.model,
            organization_id=job.client_id,
            result_files=job.result_files,
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            estimated_finish=job.estimated_finish,
            metadata=job.metadata or None,
            user_provided_suffix=job.suffix,
            fine_tuning_method=hp.public_method,
            lora=lora,
            ray_job_id=job.ray_job_id,
            attempts=job.attempts,
            resources=(
                job.resources.model_copy(update={"launcher": job.launcher}) if job.resources else None
            ),
            progress=job.progress,
            priority=job.priority,
            output_model_path=job.output_model_path,
            output_model_uri=job.output_model_uri,
            integrations=job.integrations,
            queue=queue,
        )


EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics"]


class JobEvent(BaseModel):
    """One event in `fine_tuning_job_events`. `seq` orders a job's events (microseconds, unique)."""

    id: str
    job_id: str
    client_id: str
    seq: int
    created_at: int
    level: EventLevel
    message: str
    type: EventType = "message"
    data: dict[str, Any] | None = None


class JobEventPublic(BaseModel):
    """OpenAI's `fine_tuning.job.event`."""

    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: EventLevel
    message: str
    type: EventType
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: JobEvent) -> JobEventPublic:
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data,
        )


class CheckpointMetrics(BaseModel):
    """OpenAI's checkpoint metrics. Evaluations run on the whole validation file, so `full_valid_*`
    and `valid_*` hold the same figures; training-batch token accuracy is not measured (null)."""

    step: int
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(BaseModel):
    """A checkpoint written by a job, in `fine_tuning_job_checkpoints`."""

    id: str
    job_id: str
    client_id: str
    step: int
    path: str
    model_name: str
    metrics: CheckpointMetrics
    created_at: int


class CheckpointPublic(BaseModel):
    """OpenAI's `fine_tuning.job.checkpoint`, plus where the files are."""

    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    path: str

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointPublic:
        return cls(
            id=checkpoint.id,
            created_at=checkpoint.created_at,
            fine_tuned_model_checkpoint=checkpoint.model_name,
            fine_tuning_job_id=checkpoint.job_id,
            metrics=checkpoint.metrics,
            step_number=checkpoint.step,
            path=checkpoint.path,
        )


class GpuPool(BaseModel):
    total: float
    free: float


class ClusterResources(BaseModel):
    """What the Ray cluster has (total) and has not reserved yet (free)."""

    object: Literal["cluster.resources"] = "cluster.resources"
    nodes: int
    cpus_total: float
    cpus_free: float
    gpus_total: float
    gpus_free: float
    gpus_by_type: dict[str, GpuPool]
    memory_total_bytes: int
    memory_free_bytes: int
    largest_node_memory_bytes: int
    # GPUs of the live node with the most (what one STRICT_PACK placement group can get at most).
    largest_node_gpus: float = 0.0


class JobEstimate(BaseModel):
    """The dry run of a job: the plan, what it needs, and whether the cluster can ever run it."""

    object: Literal["fine_tuning.job.estimate"] = "fine_tuning.job.estimate"
    model: str
    hyperparameters: Hyperparameters
    dataset_tokens: int
    sequence_length: int
    tokens_to_train: int
    trainable_parameters: int
    total_parameters: int
    resources: JobResources
    fits: bool
    fits_now: bool
    reason: str | None
    # What the planner changed from the request to make the job fit, in words (empty: nothing).
    adjustments: list[str] = Field(default_factory=list)


LaunchState = Literal["pending", "running", "succeeded", "failed", "stopped"]


class LaunchStatus(BaseModel):
    """What the compute backend says of a launched training run."""

    state: LaunchState
    message: str | None = None
