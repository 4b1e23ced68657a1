"""Job state machine, fine-tuned model names, resource estimates."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Literal

import pytest

from bench.model_shapes import SHAPES
from studio.domain.estimate import GIB, Device, TrainingPlan, estimate, lora_parameters, shape_from_config
from studio.domain.jobs import (
    JOB_TRANSITIONS,
    TERMINAL,
    check_job_transition,
    check_suffix,
    fine_tuned_model_name,
    parse_fine_tuned_model_name,
)
from studio.errors import Conflict, InvalidInput

LLAMA_7B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
}
H100 = Device("H100", 80 * GIB, 989.0)
A10G = Device("A10G", 24 * GIB, 125.0)


def test_happy_path_and_retry_are_allowed() -> None:
    for current, target in [
        ("validating_files", "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
        ("running", "queued"),
        ("running", "cancelled"),
        ("queued", "cancelled"),
    ]:
        check_job_transition(current, target)


def test_terminal_states_never_change() -> None:
    for current, target in itertools.product(TERMINAL, JOB_TRANSITIONS):
        with pytest.raises(Conflict):
            check_job_transition(current, target)


def test_skipping_ahead_is_refused() -> None:
    with pytest.raises(Conflict, match="cannot go"):
        check_job_transition("validating_files", "succeeded")


def test_fine_tuned_names_round_trip() -> None:
    name = fine_tuned_model_name(
        base_model="mini-studio/tiny-llama", client_id="client-1", suffix="v2", job_id="ftjob-9"
    )
    assert name == "ft:mini-studio/tiny-llama:client-1:v2:ftjob-9"
    assert parse_fine_tuned_model_name(name) == ("mini-studio/tiny-llama", "client-1", "v2", "ftjob-9")
    assert parse_fine_tuned_model_name("meta-llama/Llama-3.1-8B") is None
    assert check_suffix("my_run-1") == "my_run-1"
    with pytest.raises(InvalidInput):
        check_suffix("bad suffix!")


def test_llama_7b_parameter_count() -> None:
    shape = shape_from_config(LLAMA_7B)
    assert abs(shape.parameters - 6.74e9) / 6.74e9 < 0.02


def test_full_7b_needs_sharding_and_lora_fits_one_small_gpu() -> None:
    shape = shape_from_config(LLAMA_7B)
    plan = TrainingPlan(
        method="full",
        precision="bf16",
        sequence_length=2048,
        batch_size=1,
        dataset_tokens=10_000_000,
        epochs=3,
    )
    full = estimate(shape, plan, H100)
    assert full.fits and full.workers >= 2
    assert full.training_state_bytes == shape.parameters * 18  # AdamW state + bf16 autocast copy
    lora = estimate(
        shape,
        TrainingPlan(
            method="lora",
            precision="bf16",
            sequence_length=1024,
            batch_size=1,
            dataset_tokens=10_000_000,
            epochs=3,
        ),
        A10G,
    )
    assert lora.fits and lora.workers == 1
    assert lora.trainable_parameters == lora_parameters(shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert 4e6 < lora.trainable_parameters < 20e6
    assert lora.wall_time_s > 0 and lora.tokens_to_train == 30_000_000


def test_lora_that_cannot_fit_says_why() -> None:
    shape = shape_from_config({**LLAMA_7B, "num_hidden_layers": 320})
    plan = TrainingPlan(
        method="lora", precision="bf16", sequence_length=4096, batch_size=8, dataset_tokens=1000, epochs=1
    )
    result = estimate(shape, plan, A10G)
    assert not result.fits and result.reason is not None and "GiB" in result.reason


# Peak `torch.cuda.max_memory_allocated` of the training loop on an H200, as `bench/cuda_training.py` wrote
# them to bench/results/*.json: (shape, method, sequence length, batch size, GiB measured).
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
MEASURED_PEAKS = [
    (
        run["shape"],
        result["method"],
        run["args"]["seq_len"],
        run["args"]["batch_size"],
        result["peak_allocated_gib"],
    )
    for path in sorted(RESULTS.glob("*.json"))
    for run in [json.loads(path.read_text())]
    for result in run["results"]
]


def test_the_measured_peaks_are_there() -> None:
    assert len(MEASURED_PEAKS) == 4 and {name for name, *_ in MEASURED_PEAKS} <= set(SHAPES)


@pytest.mark.parametrize(("name", "method", "seq", "batch", "measured_gib"), MEASURED_PEAKS)
def test_memory_estimate_matches_the_measured_peak(
    name: str, method: Literal["lora", "full"], seq: int, batch: int, measured_gib: float
) -> None:
    shape = shape_from_config(SHAPES[name])
    plan = TrainingPlan(
        method=method, precision="bf16", sequence_length=seq, batch_size=batch, dataset_tokens=1, epochs=1
    )
    estimated = estimate(shape, plan, Device("H200", 141 * GIB, 989.0)).memory_per_worker_bytes / GIB
    assert 0.9 * measured_gib <= estimated <= 1.1 * measured_gib
