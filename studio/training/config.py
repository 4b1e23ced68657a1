"""The configuration of one training run, its outcome, and the layout of what it writes.

Under `output_dir`: `checkpoints/step-<N>/` (one per checkpoint, with `trainer_state.json`) and
`final/`; every directory is written under a temporary name beside its target and renamed into place,
so a reader (or a resumed run) never sees a half-written one. `STOP` (an empty file) asks every rank
of a running job to checkpoint and stop; `ray_train/` holds Ray Train's own run state.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
STATE_FILE = "trainer_state.json"
STOP_FILE = "STOP"
# The run's config as JSON, in the launch's environment: a node without the config file reads it there.
CONFIG_ENV = "STUDIO_TRAIN_CONFIG"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class WandbRun(BaseModel):
    """A Weights & Biases run the job logs its metrics to (rank 0 only; see `studio.training.wandb_log`).

    `run_id` is the job's id (a retried attempt resumes the same run); `directory` is where wandb writes
    its files (the job's directory: an offline run lies under `<directory>/wandb/offline-run-*`). The
    API key and a self-hosted server's URL come by environment (`WANDB_API_KEY`, `WANDB_BASE_URL`), never
    in this file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(min_length=1)
    name: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    mode: Literal["online", "offline"] = "offline"
    run_id: str = Field(min_length=1)
    directory: Path


class RemoteStorage(BaseModel):
    """S3 copies of a run's inputs and outputs, for a node that does not see the head's data directory.

    `training_file` / `validation_file` are the datasets' S3 mirror (`s3://bucket/key`), fetched into the
    node's cache when the config's local path is missing there; `output` is the S3 folder the run's
    checkpoints and final model go to when `output_dir`'s parent is missing there (see
    `studio.training.remote_files`). Credentials come by environment (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`), never in this file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    training_file: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+")
    validation_file: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+")
    output: str = Field(pattern=r"^s3://[^/]+/.+")


class TrainConfig(BaseModel):
    """Everything `train` needs; the supervisor writes it as JSON for `python -m studio.training`.

    Step counts are optimizer steps: one step consumes `batch_size * gradient_accumulation_steps`
    examples on each of `world_size` ranks. `eval_every_steps` / `checkpoint_every_steps` of 0 mean
    "only at the end" / "only when stopped early". Invalid values raise pydantic's ValidationError,
    which is a ValueError (a user error).

    `base_model` is a local model directory or a model name (`mini-studio/tiny-llama` or a Hugging Face
    hub id); `python -m studio.training` resolves a name to a directory under `models_dir` (see
    `studio.training.models`) before training, and `train` itself needs a directory. `num_workers`,
    `use_gpu` and `cpus_per_worker` size a Ray Train run, used when `ray_train` is set or
    `num_workers > 1`; `rank` and `world_size` are set per worker by that run, never by the caller.

    `method`: "lora", "full", or "qlora" (LoRA on the base loaded in 4-bit NF4 by bitsandbytes, bf16
    compute; CUDA only). `lora_target_modules` may be ("all-linear",): every linear layer but the LM
    head. `sharding` is how a distributed run's workers share the model: "ddp" (each holds all of it)
    or "fsdp" (FSDP2, each holds 1/world of parameters, gradients and optimizer state; checkpoints in
    DCP's sharded format, which a run on any number of workers resumes). `gradient_checkpointing`
    recomputes each layer's activations in the backward pass instead of keeping them.

    `objective` is what the loss learns: "supervised" (next-token loss on the trained tokens of chat or
    prompt/completion rows) or "dpo" (Direct Preference Optimization on preference rows, with `beta`
    the strength of the pull towards the frozen reference; see `studio.training.dpo`). `method`
    (LoRA or full) is orthogonal to it. `beta` is ignored by supervised runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model: str = Field(min_length=1)
    models_dir: Path | None = None
    training_file: Path
    validation_file: Path | None = None
    output_dir: Path
    method: Literal["lora", "full", "qlora"] = "lora"
    sharding: Literal["ddp", "fsdp"] = "ddp"
    objective: Literal["supervised", "dpo"] = "supervised"
    beta: float = Field(default=0.1, gt=0, le=100)
    n_epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    max_seq_len: int = Field(default=2048, ge=2)
    seed: int = Field(default=42, ge=0)
    eval_every_steps: int = Field(default=0, ge=0)
    checkpoint_every_steps: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, le=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)  # 0 disables clipping
    gradient_checkpointing: bool = False
    device: str = "auto"
    world_size: int = Field(default=1, ge=1)
    rank: int = Field(default=0, ge=0)
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    ray_train: bool = False
    wandb: WandbRun | None = None
    remote: RemoteStorage | None = None
    # The data disk's guard (the server's `storage` settings): a checkpoint is skipped, with a warning
    # event, while the output directory's disk has less free than the larger of the two.
    min_free_bytes: int = Field(default=0, ge=0)
    min_free_percent: float = Field(default=0.0, ge=0, le=100)

    @field_validator("base_model", mode="before")
    @classmethod
    def _path_to_str(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @property
    def uses_ray_train(self) -> bool:
        """Return True when the job runs under Ray Train (`ray_train` set or more than one worker)."""
        return self.ray_train or self.num_workers > 1

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f'device must be "auto", "cpu", "cuda" or "cuda:N", not {value!r}')
        return value

    @field_validator("lora_target_modules")
    @classmethod
    def _check_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(value):
            raise ValueError("lora_target_modules must name at least one module")
        return value

    @model_validator(mode="after")
    def _check_rank(self) -> TrainConfig:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is out of range for world_size {self.world_size}")
        if self.method == "qlora" and self.sharding == "fsdp":
            raise ValueError('QLoRA runs on one GPU per worker with DDP: sharding must be "ddp"')
        return self


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The outcome of `train`.

    `final_path` is `output_dir/final` (adapter or full model, plus tokenizer) when training finished,
    None when it was stopped early; `checkpoint_path` is the last checkpoint written by this call.
    `trained_tokens` counts the tokens the loss was computed on, across resumed runs.
    """

    final_path: Path | None
    steps: int
    trained_tokens: int
    final_train_loss: float | None
    stopped: bool
    checkpoint_path: Path | None = None
    # Where the final model was uploaded (`TrainConfig.remote` on a node without the shared folder).
    final_uri: str | None = None


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """Return the complete checkpoint with the highest step under `checkpoints`, or None."""
    best: tuple[int, Path] | None = None
    if checkpoints.is_dir():
        for child in checkpoints.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file() and (best is None or int(match[1]) > best[0]):
                best = (int(match[1]), child)
    return best[1] if best else None


def atomic_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write` on a fresh temporary directory beside `target`, rename it to `target`; return `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        publish_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def publish_dir(tmp: Path, target: Path) -> None:
    """Rename the complete directory `tmp` to `target`, replacing an older `target`."""
    if target.exists():
        # A rename cannot replace a non-empty directory: move the old one aside, then drop it.
        old = target.parent / f".old-{target.name}-{uuid.uuid4().hex}"
        os.rename(target, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, target)


def remove_leftovers(*folders: Path) -> None:
    """Delete the temporary directories a killed run left half-written."""
    for folder in folders:
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and child.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(child, ignore_errors=True)
