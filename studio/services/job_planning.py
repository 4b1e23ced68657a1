"""From a job request to a plan: hyperparameters decided, resources sized, feasibility judged."""

from __future__ import annotations

from dataclasses import dataclass

from studio.config import TrainingSettings
from studio.domain.datasets import DatasetStats
from studio.domain.estimate import GIB, Device, TrainingPlan, accelerator, estimate
from studio.domain.jobs import auto_batch_size, auto_epochs
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.jobs import (
    ClusterResources,
    Hyperparameters,
    HyperparametersIn,
    JobEstimate,
    JobResources,
)


def decide_hyperparameters(given: HyperparametersIn, stats: DatasetStats | None) -> Hyperparameters:
    """Return the hyperparameters with every "auto" replaced by a value chosen from the dataset's size."""
    rows = stats.valid_rows if stats is not None else 0
    return Hyperparameters(
        n_epochs=auto_epochs(rows) if given.n_epochs == "auto" else given.n_epochs,
        batch_size=auto_batch_size(rows) if given.batch_size == "auto" else given.batch_size,
        learning_rate_multiplier=(
            1.0 if given.learning_rate_multiplier == "auto" else given.learning_rate_multiplier
        ),
        fine_tuning_method=given.fine_tuning_method,
        lora_r=given.lora_r,
        lora_alpha=given.lora_alpha,
        lora_dropout=given.lora_dropout,
        lora_target_modules=given.lora_target_modules,
    )


@dataclass(frozen=True, slots=True)
class _Pool:
    device: Device
    workers_available: float
    workers_free: float


def _pool(cluster: ClusterResources, settings: TrainingSettings) -> _Pool:
    """The devices a job would train on: the most common GPU type, else CPU workers."""
    if cluster.gpus_total > 0 and cluster.gpus_by_type:
        kind, pool = max(cluster.gpus_by_type.items(), key=lambda item: item[1].total)
        device = accelerator(
            kind,
            default_memory_bytes=int(settings.unknown_gpu_memory_gib * GIB),
            default_tflops=settings.unknown_gpu_tflops,
        )
        return _Pool(device, pool.total, pool.free)
    per_worker = settings.cpus_per_worker
    memory = cluster.largest_node_memory_bytes
    device = Device("cpu", memory, settings.cpu_tflops * per_worker)
    return _Pool(device, cluster.cpus_total / per_worker, cluster.cpus_free / per_worker)


def plan_job(
    *,
    model: BaseModelEntry,
    hyperparameters: Hyperparameters,
    stats: DatasetStats | None,
    cluster: ClusterResources,
    settings: TrainingSettings,
) -> JobEstimate:
    """Return the estimate of a job: memory and workers it needs, time it takes, whether it can ever run.

    `fits` is False when no number of the cluster's devices can hold the job (it is refused); `fits_now`
    is False when the devices exist but are taken (it waits `queued`).
    """
    shape = model.shape
    longest = int(stats.tokens_per_example.max) if stats is not None else settings.max_seq_len
    sequence = max(16, min(shape.context_length, settings.max_seq_len, longest))
    pool = _pool(cluster, settings)
    on_gpu = pool.device.kind != "cpu"
    dataset_tokens = stats.tokens_total if stats is not None else 0
    result = estimate(
        shape,
        TrainingPlan(
            method=hyperparameters.fine_tuning_method,
            precision="bf16" if on_gpu else "fp32",
            sequence_length=sequence,
            batch_size=hyperparameters.batch_size,
            dataset_tokens=dataset_tokens,
            epochs=hyperparameters.n_epochs,
            lora_rank=hyperparameters.lora_r,
            lora_modules=tuple(hyperparameters.lora_target_modules),
        ),
        pool.device,
        # CPU workers run data-parallel (DDP): each holds the whole model and optimizer state.
        **({} if on_gpu else {"max_workers": 1}),
    )
    workers = result.workers if on_gpu else settings.cpu_workers
    reason = result.reason
    if result.fits and workers > pool.workers_available:
        unit = f"{pool.device.kind} GPU(s)" if on_gpu else f"CPU workers of {settings.cpus_per_worker} CPUs"
        reason = f"needs {workers} {unit}; the cluster has {int(pool.workers_available)}"
    fits = reason is None
    resources = JobResources(
        accelerator=pool.device.kind,
        workers=workers,
        num_cpus_per_worker=1.0 if on_gpu else settings.cpus_per_worker,
        num_gpus_per_worker=1.0 if on_gpu else 0.0,
        memory_per_worker_bytes=result.memory_per_worker_bytes,
        # The estimate assumes one worker per sharding step on GPUs; CPU workers split the data.
        estimated_wall_time_s=result.wall_time_s if on_gpu else result.wall_time_s / workers,
        precision="bf16" if on_gpu else "fp32",
    )
    return JobEstimate(
        model=model.id,
        hyperparameters=hyperparameters,
        dataset_tokens=dataset_tokens,
        sequence_length=sequence,
        tokens_to_train=result.tokens_to_train,
        trainable_parameters=result.trainable_parameters,
        total_parameters=shape.parameters,
        resources=resources,
        fits=fits,
        fits_now=fits and workers <= pool.workers_free,
        reason=reason,
    )
