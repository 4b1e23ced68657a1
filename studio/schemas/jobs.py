"""Fine-tuning jobs: OpenAI's create body (both hyperparameter spellings) and the stored job.

The request accepts OpenAI's legacy top-level `hyperparameters` and the newer
`method: {type: supervised, supervised: {hyperparameters}}`; `resolved_hyperparameters` folds both into one
`Hyperparameters` with Mini Studio's LoRA settings, so the rest of the code sees one shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.domain.jobs import ErrorKind, JobStatus

Auto = Literal["auto"]
PositiveEpochs = Annotated[int, Field(ge=1, le=100)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
LrMultiplier = Annotated[float, Field(gt=0, le=100)]


class HyperparametersIn(BaseModel):
    """Hyperparameters as sent: numbers or "auto", plus Mini Studio's LoRA and method settings."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: PositiveEpochs | Auto = "auto"
    batch_size: BatchSize | Auto = "auto"
    learning_rate_multiplier: LrMultiplier | Auto = "auto"
    fine_tuning_method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, max_length=32
    )


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"]
    supervised: SupervisedMethod = Field(default_factory=SupervisedMethod)


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

    @model_validator(mode="after")
    def _one_hyperparameter_spelling(self) -> JobCreate:
        if self.hyperparameters is not None and self.method is not None:
            raise ValueError(
                "send hyperparameters either at the top level or under method.supervised, not both"
            )
        return self

    def resolved_hyperparameters(self) -> HyperparametersIn:
        """Return the hyperparameters from whichever spelling was used (defaults when none)."""
        if self.method is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or HyperparametersIn()


class Hyperparameters(BaseModel):
    """Hyperparameters with every "auto" decided (stored on the job, shown by OpenAI's API)."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    fine_tuning_method: Literal["lora", "full"]
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]


class JobError(BaseModel):
    """Why a job failed: a user error (data, hyperparameters) or a platform error (worker lost)."""

    code: str
    message: str
    param: str | None = None
    kind: ErrorKind


class Job(BaseModel):
    """A job as stored in `fine_tuning_jobs` (`_id` = `id`)."""

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
    trained_tokens: int | None = None
    created_at: int
    finished_at: int | None = None
    estimated_finish: int | None = None


LaunchState = Literal["pending", "running", "succeeded", "failed", "stopped"]


class LaunchStatus(BaseModel):
    """What the compute backend says of a launched training run."""

    state: LaunchState
    message: str | None = None
