"""What one attempt of a fine-tuning job runs with: the entrypoint's configuration and its launch
environment.

Every value of the configuration was decided when the job was created (hyperparameters, resources, the
plan); this only writes it down for `python -m studio.training`. Secrets (the W&B key, S3 keys) go to the
launch's environment, never into the configuration file, which lies on disk beside the job's outputs.
"""

from __future__ import annotations

from pathlib import Path

from studio.config import S3Settings, StorageSettings, TrainingSettings, WandbSettings
from studio.domain.jobs import learning_rate
from studio.ports import FileStore
from studio.schemas.jobs import DEFAULT_DPO_BETA, Job
from studio.services.integrations import wandb_env, wandb_run
from studio.services.remote_storage import remote_env, remote_storage
from studio.training.config import TrainConfig


class RunConfigs:
    """Builds each attempt's `TrainConfig` and launch environment from a stored job."""

    def __init__(
        self,
        *,
        job_files: FileStore,
        models_dir: Path,
        settings: TrainingSettings,
        storage: StorageSettings | None = None,
        wandb: WandbSettings | None = None,
        s3: S3Settings | None = None,
    ) -> None:
        """`storage`: the data disk's guard (checkpoints skipped under it); `s3`: the object store, so a
        run on a node without the data folder uses S3."""
        self._job_files = job_files
        self._models_dir = models_dir
        self._settings = settings
        self._storage = storage or StorageSettings(min_free_bytes=0, min_free_percent=0)
        self._wandb = wandb
        self._s3 = s3

    def build(
        self,
        job: Job,
        *,
        source: str,
        training: str,
        validation: str | None,
        s3_uris: tuple[str | None, str | None] = (None, None),
    ) -> TrainConfig:
        """Return the entrypoint's configuration for `job`; `s3_uris`: the S3 mirror of the training and
        validation files."""
        hp = job.hyperparameters
        resources = job.resources
        workers = resources.workers if resources else 1
        output_dir = self._job_files.absolute(job.id)
        return TrainConfig(
            base_model=source,
            models_dir=self._models_dir,
            min_free_bytes=self._storage.min_free_bytes,
            min_free_percent=self._storage.min_free_percent,
            training_file=Path(training),
            validation_file=Path(validation) if validation else None,
            output_dir=output_dir,
            method="qlora" if hp.quantization is not None else hp.fine_tuning_method,
            objective=hp.method_type,
            beta=hp.beta if hp.beta is not None else DEFAULT_DPO_BETA,  # a supervised run ignores it
            n_epochs=hp.n_epochs,
            # A step is `batch_size` rows per worker, in `accumulation_steps` micro-batches.
            batch_size=hp.batch_size // hp.accumulation_steps,
            gradient_accumulation_steps=hp.accumulation_steps,
            gradient_checkpointing=hp.gradient_checkpointing is True,
            sharding=resources.sharding if resources else "ddp",
            learning_rate=learning_rate(hp.fine_tuning_method, hp.learning_rate_multiplier),
            lora_r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            lora_target_modules=tuple(hp.lora_target_modules),
            max_seq_len=self._settings.max_seq_len,
            seed=job.seed,
            eval_every_steps=self._settings.eval_every_steps,
            checkpoint_every_steps=self._settings.checkpoint_every_steps,
            warmup_ratio=self._settings.warmup_ratio,
            num_workers=workers,
            use_gpu=bool(resources and resources.num_gpus_per_worker > 0),
            cpus_per_worker=resources.num_cpus_per_worker if resources else self._settings.cpus_per_worker,
            ray_train=workers > 1,
            wandb=wandb_run(job, self._wandb, output_dir=output_dir),
            remote=remote_storage(
                self._s3, client_id=job.client_id, job_id=job.id, training=s3_uris[0], validation=s3_uris[1]
            ),
        )

    def launch_env(self, config: TrainConfig) -> dict[str, str] | None:
        """Return the environment the run's launch adds (secrets its config must not hold), or None."""
        env = {
            **(wandb_env(self._wandb) if config.wandb is not None else {}),
            **remote_env(self._s3, config),
        }
        return env or None
