"""From a job request to a plan: hyperparameters decided, resources sized, feasibility judged.

The plan is what the trainer will run: the layout (`resources.sharding`, `resources.workers`), and
gradient checkpointing and the micro-batch in the stored hyperparameters, which the job's training
config carries to the trainer. Where the request leaves them "auto" the planner may turn gradient
checkpointing on, split the batch into micro-batches and shard with FSDP over more workers, in that
order, to make the job fit (`JobEstimate.adjustments` says what it changed); when no layout fits on
the cluster's devices the estimate names the smallest one that would.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.config import TrainingSettings
from studio.domain.datasets import DatasetStats
from studio.domain.estimate import GIB, Device, TrainingPlan, accelerator, estimate
from studio.domain.jobs import auto_batch_size, auto_epochs
from studio.errors import InvalidInput
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.jobs import (
    DEFAULT_DPO_BETA,
    ClusterResources,
    DpoHyperparametersIn,
    Hyperparameters,
    HyperparametersIn,
    JobEstimate,
    JobResources,
)


def decide_hyperparameters(given: HyperparametersIn, stats: DatasetStats | None) -> Hyperparameters:
    """Return the hyperparameters with every "auto" replaced by a value chosen from the dataset's size.

    A `DpoHyperparametersIn` makes a DPO job's ("auto" beta: `DEFAULT_DPO_BETA`). "qlora" is stored
    as LoRA with `quantization` "nf4". `gradient_checkpointing` and `micro_batch_size` are left at
    as asked ("auto" included): `plan_job` decides them.

    Raises:
        InvalidInput: `micro_batch_size` does not divide the batch size.
    """
    rows = stats.valid_rows if stats is not None else 0
    beta = None
    if isinstance(given, DpoHyperparametersIn):
        beta = DEFAULT_DPO_BETA if given.beta == "auto" else given.beta
    batch_size = auto_batch_size(rows) if given.batch_size == "auto" else given.batch_size
    micro = given.micro_batch_size
    if micro != "auto" and (micro > batch_size or batch_size % micro):
        raise InvalidInput(
            f"micro_batch_size {micro} must divide the batch size {batch_size} (a step is batch_size rows "
            "in batch_size / micro_batch_size micro-batches)",
            param="hyperparameters.micro_batch_size",
            code="invalid_hyperparameter",
        )
    return Hyperparameters(
        n_epochs=auto_epochs(rows) if given.n_epochs == "auto" else given.n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=(
            1.0 if given.learning_rate_multiplier == "auto" else given.learning_rate_multiplier
        ),
        fine_tuning_method="full" if given.fine_tuning_method == "full" else "lora",
        quantization="nf4" if given.fine_tuning_method == "qlora" else None,
        gradient_checkpointing=given.gradient_checkpointing,
        micro_batch_size=micro,
        lora_r=given.lora_r,
        lora_alpha=given.lora_alpha,
        lora_dropout=given.lora_dropout,
        lora_target_modules=given.lora_target_modules,
        method_type="supervised" if beta is None else "dpo",
        beta=beta,
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

    `fits` is False when no layout fits the cluster's devices (it is refused: the reason names the
    smallest layout that would fit, or why none does); `fits_now` is False when the devices exist but
    are taken (it waits `queued`). The returned hyperparameters have gradient checkpointing and the
    micro-batch decided, `resources` the layout, `adjustments` what the planner changed to fit.
    """
    shape = model.shape
    longest = int(stats.tokens_per_example.max) if stats is not None else settings.max_seq_len
    sequence = max(16, min(shape.context_length, settings.max_seq_len, longest))
    pool = _pool(cluster, settings)
    on_gpu = pool.device.kind != "cpu"
    dataset_tokens = stats.tokens_total if stats is not None else 0
    hp = hyperparameters
    plan = TrainingPlan(
        method=hp.fine_tuning_method,
        precision="bf16" if on_gpu else "fp32",
        sequence_length=sequence,
        batch_size=hp.batch_size,
        dataset_tokens=dataset_tokens,
        epochs=hp.n_epochs,
        lora_rank=hp.lora_r,
        lora_modules=tuple(hp.lora_target_modules),
        objective=hp.method_type,
        gradient_checkpointing=hp.gradient_checkpointing,
        micro_batch_size=hp.micro_batch_size,
        quantized=hp.quantization is not None,
    )
    # CPU workers start data-parallel at the configured number; GPU jobs at one GPU.
    first = 1 if on_gpu else settings.cpu_workers
    result = estimate(shape, plan, pool.device, min_workers=first)
    workers = result.workers
    reason = result.reason
    if hp.quantization is not None and not on_gpu:
        reason = (
            'QLoRA (fine_tuning_method "qlora") loads the base in 4 bits with bitsandbytes, which needs '
            'CUDA GPUs; this cluster has none (use "lora")'
        )
    elif result.fits and workers > pool.workers_available:
        layout = f"{workers} {pool.device.kind} GPU(s)" if on_gpu else f"{workers} CPU workers"
        unit = "" if on_gpu else f" of {settings.cpus_per_worker} CPUs"
        adjusted = f" ({'; '.join(result.adjustments)})" if result.adjustments else ""
        reason = (
            f"the smallest layout that fits needs {layout}{unit}{adjusted}; "
            f"the cluster has {int(pool.workers_available)}"
        )
    fits = reason is None
    resources = JobResources(
        accelerator=pool.device.kind,
        workers=workers,
        num_cpus_per_worker=1.0 if on_gpu else settings.cpus_per_worker,
        num_gpus_per_worker=1.0 if on_gpu else 0.0,
        memory_per_worker_bytes=result.memory_per_worker_bytes,
        estimated_wall_time_s=result.wall_time_s,
        precision="bf16" if on_gpu else "fp32",
        sharding=result.sharding,
    )
    micro = result.micro_batch_size
    decided = hp.model_copy(
        update={
            "gradient_checkpointing": result.gradient_checkpointing,
            "micro_batch_size": None if micro == hp.batch_size else micro,
        }
    )
    return JobEstimate(
        model=model.id,
        hyperparameters=decided,
        dataset_tokens=dataset_tokens,
        sequence_length=sequence,
        tokens_to_train=result.tokens_to_train,
        trainable_parameters=result.trainable_parameters,
        total_parameters=shape.parameters,
        resources=resources,
        fits=fits,
        fits_now=fits and workers <= pool.workers_free,
        reason=reason,
        adjustments=list(result.adjustments),
    )
