"""The planner matches what the trainer runs: DDP vs FSDP, LoRA modules, checkpointing, micro-batches.

Figures are checked against the rules of `studio.domain.estimate` by hand where it is short; the
fallback order (gradient checkpointing, then micro-batches, then FSDP over more workers) and the
refusal that names the smallest layout are checked through `plan_job`, as job creation calls it.
"""

from __future__ import annotations

import pytest

from studio.config import TrainingSettings
from studio.domain.estimate import (
    GIB,
    Device,
    Layout,
    TrainingPlan,
    candidate_layouts,
    estimate,
    estimate_layout,
    lora_parameters,
    shape_from_config,
)
from studio.errors import InvalidInput
from studio.schemas.jobs import HyperparametersIn
from studio.services.job_planning import decide_hyperparameters, plan_job
from tests.unit.test_job_planning import LLAMA_8B, cluster, llama_8b, stats

H100 = Device("H100", 80 * GIB, 989.0)
SHAPE = shape_from_config(LLAMA_8B)


def plan(**overrides: object) -> TrainingPlan:
    values: dict[str, object] = {
        "method": "full", "precision": "bf16", "sequence_length": 1024, "batch_size": 4,
        "dataset_tokens": 10**6, "epochs": 1,
    }  # fmt: skip
    return TrainingPlan(**(values | overrides))  # type: ignore[arg-type]


def test_an_8b_full_fine_tune_on_4_h100s_is_planned_as_fsdp_not_ddp() -> None:
    hp = decide_hyperparameters(
        HyperparametersIn(fine_tuning_method="full", batch_size=4, gradient_checkpointing=False),
        stats(1000, 1024),
    )
    result = plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(1000, 1024),
        cluster=cluster(gpus={"H100": 4}), settings=TrainingSettings(),
    )  # fmt: skip
    assert result.fits, result.reason
    assert result.resources.sharding == "fsdp" and result.resources.workers == 4
    assert result.adjustments == ["sharded with FSDP over 4 workers"]
    # Per worker: a quarter of 16 bytes a parameter, plus the gathered units and the activations.
    quarter = SHAPE.parameters * 16 // 4
    chosen = estimate_layout(SHAPE, plan(), H100, Layout(4, "fsdp", False, 4))
    assert result.resources.memory_per_worker_bytes == chosen.memory_per_worker_bytes
    gathered = chosen.memory_per_worker_bytes - chosen.activation_bytes - quarter
    assert 0 < gathered < 10 * GIB
    # DDP would hold the whole state on every GPU: far more than one H100.
    ddp = estimate_layout(SHAPE, plan(), H100, Layout(4, "ddp", False, 4))
    assert not ddp.fits and ddp.memory_per_worker_bytes > SHAPE.parameters * 18


def test_fsdp_divides_the_state_ddp_replicates_it() -> None:
    one = estimate_layout(SHAPE, plan(), H100, Layout(1, "ddp", False, 4))
    ddp = estimate_layout(SHAPE, plan(), H100, Layout(2, "ddp", False, 4))
    fsdp2 = estimate_layout(SHAPE, plan(), H100, Layout(2, "fsdp", False, 4))
    fsdp4 = estimate_layout(SHAPE, plan(), H100, Layout(4, "fsdp", False, 4))
    # DDP: the whole state on each worker, plus its gradient buckets (4 bytes a parameter).
    assert ddp.memory_per_worker_bytes == one.memory_per_worker_bytes + 4 * SHAPE.parameters
    gathered2 = fsdp2.memory_per_worker_bytes - fsdp2.activation_bytes - SHAPE.parameters * 16 // 2
    gathered4 = fsdp4.memory_per_worker_bytes - fsdp4.activation_bytes - SHAPE.parameters * 16 // 4
    assert gathered2 == gathered4 > 0  # the units gathered at a time do not shrink with more workers
    assert fsdp2.activation_bytes == fsdp4.activation_bytes == one.activation_bytes  # they do not shard
    assert fsdp4.wall_time_s == pytest.approx(one.wall_time_s / 4)


def test_lora_on_all_linear_layers_and_gradient_checkpointing_change_the_activations() -> None:
    attention = plan(method="lora")
    all_linear = plan(method="lora", lora_modules=("all-linear",))
    layout = Layout(1, "ddp", False, 4)
    a = estimate_layout(SHAPE, attention, H100, layout)
    b = estimate_layout(SHAPE, all_linear, H100, layout)
    assert b.trainable_parameters == lora_parameters(
        SHAPE, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
    # gate/up read the hidden state, down the intermediate one: (d_in + r) x 2 bytes a token each.
    extra = 2 * ((SHAPE.hidden_size + 16) * 2 + SHAPE.intermediate_size + 16) * SHAPE.layers
    assert b.activation_bytes - a.activation_bytes == 1024 * 4 * extra
    checkpointed = estimate_layout(SHAPE, attention, H100, Layout(1, "ddp", True, 4))
    assert checkpointed.activation_bytes < a.activation_bytes / 3
    assert checkpointed.wall_time_s == pytest.approx(a.wall_time_s * 6 / 4)  # one more forward
    micro = estimate_layout(SHAPE, attention, H100, Layout(1, "ddp", False, 1))
    assert micro.activation_bytes == a.activation_bytes // 4


def test_the_fallbacks_come_in_order_and_only_where_the_plan_leaves_them_open() -> None:
    auto = plan(gradient_checkpointing="auto", micro_batch_size="auto")
    layouts = candidate_layouts(auto, max_workers=4)
    assert [(x.workers, x.sharding, x.gradient_checkpointing, x.micro_batch_size) for x in layouts] == [
        (1, "ddp", False, 4), (1, "ddp", True, 4), (1, "ddp", True, 2), (1, "ddp", True, 1),
        (2, "fsdp", False, 4), (2, "fsdp", True, 4), (2, "fsdp", True, 2), (2, "fsdp", True, 1),
        (4, "fsdp", False, 4), (4, "fsdp", True, 4), (4, "fsdp", True, 2), (4, "fsdp", True, 1),
    ]  # fmt: skip
    fixed = candidate_layouts(plan(gradient_checkpointing=False, micro_batch_size=2), max_workers=2)
    assert [(x.workers, x.gradient_checkpointing, x.micro_batch_size) for x in fixed] == [
        (1, False, 2),
        (2, False, 2),
    ]
    cpu = candidate_layouts(auto, min_workers=2, max_workers=4)
    assert [(x.workers, x.sharding) for x in cpu][::4] == [(2, "ddp"), (2, "fsdp"), (4, "fsdp")]
    assert all(x.sharding == "ddp" for x in candidate_layouts(plan(method="lora", quantized=True)))


def test_the_planner_tries_checkpointing_then_micro_batches_then_more_workers() -> None:
    lora = plan(method="lora", sequence_length=2048, batch_size=8, gradient_checkpointing="auto",
                micro_batch_size="auto")  # fmt: skip
    small = Device("A10G", 24 * GIB, 125.0)
    # Checkpointing alone is enough on an H100: it is chosen, nothing else changes.
    first = estimate(SHAPE, lora, H100)
    assert first.fits and first.gradient_checkpointing and first.micro_batch_size == 8
    assert first.adjustments == ("gradient checkpointing turned on",)
    # On 24 GB the logits of 8 x 2048 tokens still do not fit: smaller micro-batches, same batch.
    second = estimate(SHAPE, lora, small)
    assert second.fits and second.gradient_checkpointing and second.micro_batch_size < 8
    assert second.workers == 1 and second.sharding == "ddp"
    assert "accumulation steps (the same 8 rows a step)" in second.adjustments[1]
    # A full fine-tune's state cannot fit one GPU whatever the activations: FSDP over more.
    full = estimate(SHAPE, plan(gradient_checkpointing="auto", micro_batch_size="auto"), H100)
    assert full.fits and full.sharding == "fsdp" and full.workers == 2
    assert full.gradient_checkpointing and full.micro_batch_size == 1  # every fallback at 2 workers
    assert full.adjustments[-1] == "sharded with FSDP over 2 workers"


def test_a_job_too_big_for_the_cluster_names_the_smallest_layout_that_fits() -> None:
    hp = decide_hyperparameters(HyperparametersIn(fine_tuning_method="full", batch_size=4), stats(1000, 1024))
    result = plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(1000, 1024),
        cluster=cluster(gpus={"H100": 1}), settings=TrainingSettings(),
    )  # fmt: skip
    assert not result.fits
    assert result.reason == (
        "the smallest layout that fits needs 2 H100 GPU(s) (gradient checkpointing turned on; "
        "micro-batch of 1 with 4 accumulation steps (the same 4 rows a step); "
        "sharded with FSDP over 2 workers); the cluster has 1"
    )
    # Every fallback is tried before more workers: at one GPU none is enough.
    assert not estimate(
        SHAPE, plan(gradient_checkpointing=True, micro_batch_size=1), H100, max_workers=1
    ).fits


def test_the_decided_hyperparameters_carry_the_plan_to_the_trainer() -> None:
    hp = decide_hyperparameters(HyperparametersIn(batch_size=8), stats(1000, 2048))
    assert hp.gradient_checkpointing == "auto" and hp.micro_batch_size == "auto"
    result = plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(1000, 2048),
        cluster=cluster(gpus={"A10G": 1}), settings=TrainingSettings(),
    )  # fmt: skip
    assert result.fits, result.reason
    decided = result.hyperparameters
    assert decided.gradient_checkpointing is True and isinstance(decided.micro_batch_size, int)
    assert decided.accumulation_steps * decided.micro_batch_size == 8
    assert result.adjustments[0] == "gradient checkpointing turned on"


def test_micro_batch_size_must_divide_the_batch() -> None:
    with pytest.raises(InvalidInput) as caught:
        decide_hyperparameters(HyperparametersIn(batch_size=8, micro_batch_size=3), stats(64))
    assert caught.value.param == "hyperparameters.micro_batch_size" and "must divide" in str(caught.value)


def test_qlora_is_refused_on_a_cluster_without_gpus() -> None:
    hp = decide_hyperparameters(HyperparametersIn(fine_tuning_method="qlora"), stats(64))
    assert hp.fine_tuning_method == "lora" and hp.quantization == "nf4" and hp.public_method == "qlora"
    result = plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(64), cluster=cluster(), settings=TrainingSettings()
    )
    assert not result.fits and "CUDA" in (result.reason or "") and "bitsandbytes" in (result.reason or "")
    on_gpu = plan_job(
        model=llama_8b(), hyperparameters=hp, stats=stats(64), cluster=cluster(gpus={"A10G": 1}),
        settings=TrainingSettings(),
    )  # fmt: skip
    assert on_gpu.fits and on_gpu.resources.sharding == "ddp"
    # A 4-bit base: well under the 16 GB the 8B weights take in bf16.
    assert on_gpu.resources.memory_per_worker_bytes < 12 * GIB
