"""Hyperparameter defaults, resource plans against a cluster, event lines, Ray's resource summary."""

from __future__ import annotations

from dataclasses import replace

import pytest

from studio.app.builtin_models import builtin_models
from studio.backends.ray_cluster import summarize
from studio.config import TrainingSettings
from studio.domain.dataset_stats import DatasetStats, Distribution
from studio.domain.estimate import GIB, Device, TrainingPlan, estimate, shape_from_config
from studio.domain.jobs import auto_batch_size, auto_epochs, classify_exit, learning_rate
from studio.domain.training_events import describe, parse_events
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.jobs import (
    DEFAULT_DPO_BETA,
    ClusterResources,
    DpoHyperparametersIn,
    GpuPool,
    HyperparametersIn,
)
from studio.services.job_planning import decide_hyperparameters, plan_job

LLAMA_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
}  # fmt: skip


def stats(rows: int, tokens_per_row: int = 100) -> DatasetStats:
    dist = Distribution(
        min=tokens_per_row, mean=tokens_per_row, p50=tokens_per_row, p95=tokens_per_row, max=tokens_per_row
    )
    return DatasetStats(
        rows=rows, valid_rows=rows, tokens_total=rows * tokens_per_row, tokens_per_example=dist,
        trained_tokens_total=rows * tokens_per_row // 2, turns_per_example=dist, role_counts={},
        duplicate_rows=0, examples_over_context=0, examples_without_system=rows, token_counting="estimate",
        estimated_trained_tokens={},
    )  # fmt: skip


def cluster(
    *, cpus: float = 2, gpus: dict[str, float] | None = None, free_gpus: float | None = None
) -> ClusterResources:
    pools = {
        kind: GpuPool(total=n, free=n if free_gpus is None else free_gpus) for kind, n in (gpus or {}).items()
    }
    total = sum(p.total for p in pools.values())
    return ClusterResources(
        nodes=1, cpus_total=cpus, cpus_free=cpus, gpus_total=total,
        gpus_free=total if free_gpus is None else free_gpus, gpus_by_type=pools,
        memory_total_bytes=16 * GIB, memory_free_bytes=16 * GIB, largest_node_memory_bytes=16 * GIB,
    )  # fmt: skip


def llama_8b() -> BaseModelEntry:
    shape = shape_from_config(LLAMA_8B)
    return BaseModelEntry(
        id="meta/llama-8b", source="meta/llama-8b", shape=shape, chat_template=True, created_at=0
    )


def test_auto_hyperparameters_follow_the_dataset_size() -> None:
    assert auto_epochs(10) == 10 and auto_epochs(40) == 3 and auto_epochs(0) == 3
    assert auto_batch_size(10) == 1 and auto_batch_size(5000) == 8 and auto_batch_size(10**7) == 32
    decided = decide_hyperparameters(HyperparametersIn(n_epochs=2), stats(4000))
    assert (decided.n_epochs, decided.batch_size, decided.learning_rate_multiplier) == (2, 8, 1.0)
    assert learning_rate("lora", 2.0) == 4e-4 and learning_rate("full", 1.0) == 2e-5


def test_exit_codes_tell_user_errors_from_platform_errors() -> None:
    assert classify_exit("Job entrypoint command failed with exit code 2, last available logs") == "user"
    assert classify_exit("Job entrypoint command failed with exit code 1") == "platform"
    assert classify_exit("Job entrypoint command failed with exit code 137") == "platform"
    assert classify_exit(None) == "platform"


def test_event_lines_are_read_whole_and_once() -> None:
    log = (
        "loading\n"
        "(RayTrainWorker pid=12) "
        'MINISTUDIO_EVENT {"type": "metrics", "step": 1, "total_steps": 4, "train_loss": 2.5}\n'
        "MINISTUDIO_EVENT {not json}\n"
        'MINISTUDIO_EVENT {"type": "checkpoint", "step": 2, "path": "/x"}\n'
        'MINISTUDIO_EVENT {"type": "res'
    )
    events, offset = parse_events(log, 0)
    assert [e.type for e in events] == ["metrics", "checkpoint"]
    assert log[offset:].startswith('MINISTUDIO_EVENT {"type": "res')
    assert describe(events[0]) == ("info", "Step 1/4: training loss=2.5000")
    assert parse_events(log, offset) == ([], offset)
    more, end = parse_events(log + 'ult", "steps": 4}\n', offset)
    assert [e.type for e in more] == ["result"] and end == len(log) + len('ult", "steps": 4}\n')
    assert events[1].end_offset <= offset


def test_a_lora_job_on_a_cpu_cluster_uses_the_configured_cpu_workers() -> None:
    tiny = builtin_models()[0]
    settings = TrainingSettings(cpu_workers=2, cpus_per_worker=0.5)
    hp = decide_hyperparameters(HyperparametersIn(), stats(64))
    plan = plan_job(model=tiny, hyperparameters=hp, stats=stats(64), cluster=cluster(), settings=settings)
    assert plan.fits and plan.fits_now
    assert plan.resources.accelerator == "cpu" and plan.resources.workers == 2
    assert plan.resources.precision == "fp32" and plan.sequence_length == 100
    assert plan.tokens_to_train == 64 * 100 * hp.n_epochs
    busy = cluster().model_copy(update={"cpus_free": 0.0})
    assert not plan_job(
        model=tiny, hyperparameters=hp, stats=stats(64), cluster=busy, settings=settings
    ).fits_now


def test_gpu_jobs_are_sized_on_the_clusters_accelerators() -> None:
    hp = decide_hyperparameters(HyperparametersIn(fine_tuning_method="full"), stats(1000, 2048))
    settings = TrainingSettings()
    plan = plan_job(
        model=llama_8b(),
        hyperparameters=hp,
        stats=stats(1000, 2048),
        cluster=cluster(gpus={"H100": 8}),
        settings=settings,
    )
    assert plan.fits and plan.resources.accelerator == "H100" and plan.resources.precision == "bf16"
    assert 2 <= plan.resources.workers <= 8  # 8B x 16 bytes does not fit one 80 GB card
    taken = cluster(gpus={"H100": 8}, free_gpus=0)
    assert not plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(1000, 2048), cluster=taken, settings=settings
    ).fits_now
    small = plan_job(
        model=llama_8b(),
        hyperparameters=hp,
        stats=stats(1000, 2048),
        cluster=cluster(gpus={"T4": 1}),
        settings=settings,
    )
    assert not small.fits and "T4" in (small.reason or "")
    lora = decide_hyperparameters(HyperparametersIn(), stats(1000, 512))
    one = plan_job(
        model=llama_8b(),
        hyperparameters=lora,
        stats=stats(1000, 512),
        cluster=cluster(gpus={"L40S": 1}),
        settings=settings,
    )
    assert one.fits and one.resources.workers == 1 and one.trainable_parameters < one.total_parameters / 100


def test_dpo_hyperparameters_decide_beta_and_mark_the_method() -> None:
    auto = decide_hyperparameters(DpoHyperparametersIn(), stats(64))
    assert auto.method_type == "dpo" and auto.beta == DEFAULT_DPO_BETA == 0.1
    assert auto.n_epochs == auto_epochs(64) and auto.batch_size == auto_batch_size(64)
    given = decide_hyperparameters(DpoHyperparametersIn(beta=0.5, fine_tuning_method="full"), stats(64))
    assert given.beta == 0.5 and given.fine_tuning_method == "full"
    supervised = decide_hyperparameters(HyperparametersIn(), stats(64))
    assert supervised.method_type == "supervised" and supervised.beta is None


def test_dpo_estimates_two_sequences_a_row_and_a_reference_forward() -> None:
    shape = shape_from_config(LLAMA_8B)
    h100 = Device("H100", 80 * GIB, 989.0)
    epochs = 2
    for method in ("lora", "full"):
        plan = TrainingPlan(
            method=method,
            precision="bf16",
            sequence_length=1024,
            batch_size=8,
            dataset_tokens=10**6,
            epochs=epochs,
        )
        sft = estimate(shape, plan, h100)
        dpo = estimate(shape, replace(plan, objective="dpo"), h100)
        # Both outputs of a row are in a step's activations, and every token is trained twice.
        assert dpo.activation_bytes == 2 * sft.activation_bytes
        assert dpo.tokens_to_train == 2 * sft.tokens_to_train
        # No frozen copy: the reference costs no weights (LoRA disables its adapter, full precomputes).
        assert dpo.training_state_bytes == sft.training_state_bytes
        if method == "lora":
            assert dpo.memory_per_worker_bytes == sft.memory_per_worker_bytes + sft.activation_bytes
        else:  # sharded over at least as many GPUs
            assert dpo.workers >= sft.workers
        # Compute: 2 x the policy's, plus a forward of the reference (2 FLOPs a parameter and token),
        # every epoch for LoRA, once before training for a full fine-tune.
        per_token = 4 if method == "lora" else 6
        reference_passes = epochs if method == "lora" else 1
        ratio = 2 * (1 + 2 * reference_passes / (per_token * epochs))
        # GPU-seconds: a full fine-tune with twice the activations may shard over more GPUs.
        gpu_seconds = sft.wall_time_s * sft.workers
        assert dpo.wall_time_s * dpo.workers == pytest.approx(gpu_seconds * ratio, rel=1e-9)


def test_ray_resources_are_summarized_by_accelerator_type() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8, "GPU": 4, "accelerator_type:A10G": 1, "memory": 64 * GIB}},
        {"Alive": True, "Resources": {"CPU": 4, "memory": 32 * GIB}},
        {"Alive": False, "Resources": {"CPU": 4, "GPU": 8, "memory": 32 * GIB}},
    ]
    summary = summarize(
        {"CPU": 12, "GPU": 4, "memory": 96 * GIB}, {"CPU": 6, "GPU": 1, "memory": 50 * GIB}, nodes
    )
    assert summary.nodes == 2 and summary.cpus_free == 6 and summary.largest_node_memory_bytes == 64 * GIB
    assert summary.gpus_by_type == {"A10G": GpuPool(total=4, free=1)}


def test_a_model_config_with_bad_sizes_is_refused_and_null_defaults_apply() -> None:
    import pytest

    for bad in ({"num_attention_heads": 0}, {"hidden_size": -64}, {"vocab_size": "many"}, {"head_dim": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            shape_from_config({**LLAMA_8B, **bad})
    with pytest.raises(KeyError):
        shape_from_config({k: v for k, v in LLAMA_8B.items() if k != "hidden_size"})
    assert shape_from_config({**LLAMA_8B, "head_dim": None}) == shape_from_config(LLAMA_8B)
