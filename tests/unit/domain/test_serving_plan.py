"""The deployment planner against published model configs (Llama-3.1 8B and 70B, `config.json` values as
Meta publishes them), worked through by hand: parameters, bytes of weights and KV cache, the smallest
tensor-parallel size that fits a GPU, and the refusals (with the numbers) of what cannot run."""

from __future__ import annotations

import pytest

from studio.domain.estimate import GIB, ModelShape, shape_from_config
from studio.domain.serving_plan import (
    OVERHEAD_BYTES,
    ParallelLayout,
    ServingRequest,
    memory_per_gpu,
    parallel_layout,
    plan_deployment,
    shard_problem,
    smallest_tensor_parallel,
    weight_bytes,
)
from studio.errors import InvalidInput

# meta-llama/Llama-3.1-8B and -70B config.json (bf16 checkpoints, untied embeddings, 128k context).
LLAMA_31_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
LLAMA_31_70B = {
    "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
H100 = 80.0  # GiB, the planner's default GPU
H200 = 141.0
L4 = 24.0


@pytest.fixture(scope="module")
def llama8b() -> ModelShape:
    return shape_from_config(LLAMA_31_8B)


@pytest.fixture(scope="module")
def llama70b() -> ModelShape:
    return shape_from_config(LLAMA_31_70B)


def request(**fields: object) -> ServingRequest:
    return ServingRequest(**({"num_gpus": 1.0} | fields))  # type: ignore[arg-type]


def smallest(shape: ModelShape, **fields: object) -> int | None:
    return smallest_tensor_parallel(shape, request(**fields))


# --- sizes ----------------------------------------------------------------------------------------------
def test_parameter_counts_are_the_published_ones(llama8b: ModelShape, llama70b: ModelShape) -> None:
    assert llama8b.parameters == 8_030_261_248
    assert llama70b.parameters == 70_553_706_496


def test_weights_take_two_bytes_a_parameter_in_bf16_and_fp8_halves_the_linear_layers(
    llama8b: ModelShape, llama70b: ModelShape
) -> None:
    assert weight_bytes(llama8b, dtype="auto", quantization=None) == 2 * 8_030_261_248  # 14.96 GiB
    assert weight_bytes(llama70b, dtype="bfloat16", quantization=None) == 2 * 70_553_706_496  # 131.4 GiB
    assert weight_bytes(llama8b, dtype="float32", quantization=None) == 4 * 8_030_261_248
    # fp8: the 32 layers' q/k/v/o and MLP matrices (6,979,321,856 parameters) in one byte; embeddings,
    # LM head and norms (1,050,939,392) stay in two.
    assert weight_bytes(llama8b, dtype="auto", quantization="fp8") == 6_979_321_856 + 2 * 1_050_939_392
    fp8_70b = weight_bytes(llama70b, dtype="auto", quantization="fp8")
    assert fp8_70b == 68_451_041_280 + 2 * 2_102_665_216
    assert 0.5 < fp8_70b / (2 * llama70b.parameters) < 0.52


def test_kv_cache_per_token_is_the_published_figure_and_splits_over_kv_heads(
    llama8b: ModelShape, llama70b: ModelShape
) -> None:
    one = ParallelLayout(1, 1)
    # 2 (K, V) x layers x 8 KV heads x 128 x 2 bytes: 128 KiB a token for 8B, 320 KiB for 70B.
    assert memory_per_gpu(llama8b, one, request()).kv_bytes_per_token == 128 * 1024
    assert memory_per_gpu(llama70b, one, request()).kv_bytes_per_token == 320 * 1024
    assert memory_per_gpu(llama70b, one, request(kv_cache_dtype="fp8")).kv_bytes_per_token == 160 * 1024
    # One full 128k-token sequence: 16 GiB (8B), 40 GiB (70B) on one GPU.
    assert memory_per_gpu(llama8b, one, request()).kv_cache_bytes == 16 * GIB
    assert memory_per_gpu(llama70b, one, request()).kv_cache_bytes == 40 * GIB
    # tp 4: two KV heads per GPU; tp 16 (> 8 KV heads): each GPU keeps a replica of one.
    assert memory_per_gpu(llama70b, ParallelLayout(4, 1), request()).kv_bytes_per_token == 80 * 1024
    assert memory_per_gpu(llama70b, ParallelLayout(16, 1), request()).kv_bytes_per_token == 40 * 1024
    # Pipeline stages split the layers: 40 of 80 on each of two.
    assert memory_per_gpu(llama70b, ParallelLayout(1, 2), request()).kv_bytes_per_token == 160 * 1024


def test_the_estimate_adds_up_and_the_rest_of_the_budget_is_kv_cache(llama8b: ModelShape) -> None:
    memory = memory_per_gpu(llama8b, ParallelLayout(1, 1), request(max_model_len=8192))
    assert memory.weights_bytes == 2 * 8_030_261_248
    assert memory.kv_cache_bytes == 8192 * 128 * 1024
    assert memory.overhead_bytes == OVERHEAD_BYTES
    assert memory.total_bytes == (
        memory.weights_bytes + memory.kv_cache_bytes + memory.activation_bytes + memory.overhead_bytes
    )
    assert 1 * GIB < memory.activation_bytes < 2 * GIB
    assert memory.budget_bytes == int(80 * GIB * 0.9)
    rest = memory.budget_bytes - memory.weights_bytes - memory.activation_bytes - memory.overhead_bytes
    assert memory.kv_cache_tokens == rest // memory.kv_bytes_per_token
    assert memory.kv_cache_tokens > 400_000  # an 8B on an 80 GiB card holds ~430k tokens of cache


# --- the smallest tensor-parallel size that fits --------------------------------------------------------
def test_an_8b_fits_one_80_gib_gpu_at_full_context_and_needs_two_l4s(llama8b: ModelShape) -> None:
    assert smallest(llama8b) == 1
    assert smallest(llama8b, gpu_memory_gib=L4) == 2  # 15 GiB weights + 16 GiB for one 128k sequence
    assert smallest(llama8b, gpu_memory_gib=L4, max_model_len=8192) == 1


def test_a_70b_in_bf16_needs_four_80_gib_gpus_at_full_context_two_at_8k(llama70b: ModelShape) -> None:
    assert smallest(llama70b) == 4
    assert smallest(llama70b, max_model_len=8192) == 2
    # 131 GiB of weights do not fit one H200 either.
    assert smallest(llama70b, gpu_memory_gib=H200, max_model_len=8192) == 2


def test_fp8_halves_the_gpus_a_70b_needs(llama70b: ModelShape) -> None:
    assert smallest(llama70b, quantization="fp8") == 2
    assert smallest(llama70b, quantization="fp8", gpu_memory_gib=H200, max_model_len=8192) == 1
    assert smallest(llama70b, quantization="fp8", kv_cache_dtype="fp8", gpu_memory_gib=H200) == 1


def test_a_lower_memory_utilization_needs_more_gpus(llama70b: ModelShape) -> None:
    assert smallest(llama70b, max_model_len=8192, gpu_memory_utilization=0.5) == 4


def test_only_splits_the_heads_allow_are_tried(llama70b: ModelShape) -> None:
    assert shard_problem(llama70b, ParallelLayout(8, 1)) is None
    assert shard_problem(llama70b, ParallelLayout(16, 1)) is None  # KV heads replicated
    assert "64 attention heads" in (shard_problem(llama70b, ParallelLayout(3, 1)) or "")
    assert "80 layers" in (shard_problem(llama70b, ParallelLayout(1, 81)) or "")
    odd = shape_from_config(LLAMA_31_8B | {"num_attention_heads": 24, "num_key_value_heads": 6})
    assert "6 KV heads" in (shard_problem(odd, ParallelLayout(4, 1)) or "")
    # A model that fits no split up to 64 GPUs.
    assert smallest(llama70b, gpu_memory_gib=1.0) is None


# --- the layout from a request --------------------------------------------------------------------------
def test_every_gpu_of_a_replica_is_a_tensor_parallel_worker_by_default() -> None:
    assert parallel_layout(num_gpus=0, tensor_parallel_size=None, pipeline_parallel_size=None) == (
        ParallelLayout(1, 1)
    )
    assert parallel_layout(num_gpus=0.5, tensor_parallel_size=None, pipeline_parallel_size=None) == (
        ParallelLayout(1, 1)
    )
    assert parallel_layout(num_gpus=1, tensor_parallel_size=None, pipeline_parallel_size=None) == (
        ParallelLayout(1, 1)
    )
    assert parallel_layout(num_gpus=8, tensor_parallel_size=None, pipeline_parallel_size=None) == (
        ParallelLayout(8, 1)
    )
    assert parallel_layout(num_gpus=8, tensor_parallel_size=None, pipeline_parallel_size=2) == (
        ParallelLayout(4, 2)
    )
    assert parallel_layout(num_gpus=8, tensor_parallel_size=2, pipeline_parallel_size=4).workers == 8
    assert parallel_layout(num_gpus=0, tensor_parallel_size=2, pipeline_parallel_size=None) == (
        ParallelLayout(2, 1)
    )


@pytest.mark.parametrize(
    ("num_gpus", "tp", "pp", "param", "words"),
    [
        (1.5, None, None, "num_gpus", "whole number"),
        (4, 2, None, "engine.tensor_parallel_size", "(2 x 1 = 2) must equal num_gpus (4)"),
        (2, 2, 2, "engine.tensor_parallel_size", "(2 x 2 = 4) must equal num_gpus (2)"),
        (6, None, 4, "engine.pipeline_parallel_size", "pipeline_parallel_size 4 does not divide num_gpus 6"),
        (0.5, 2, None, "engine.tensor_parallel_size", "a fraction of a GPU"),
    ],
)
def test_layouts_that_do_not_match_the_gpus_are_refused(
    num_gpus: float, tp: int | None, pp: int | None, param: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parallel_layout(num_gpus=num_gpus, tensor_parallel_size=tp, pipeline_parallel_size=pp)
    assert caught.value.param == param and words in caught.value.message
    assert caught.value.code == "invalid_parallel_layout"


# --- plans and refusals ---------------------------------------------------------------------------------
def test_a_plan_that_fits_carries_its_layout_and_memory(llama70b: ModelShape) -> None:
    plan = plan_deployment(llama70b, request(num_gpus=4))
    assert plan.layout == ParallelLayout(4, 1)
    assert plan.memory is not None and plan.memory.fits
    assert 40 * GIB < plan.memory.total_bytes < 50 * GIB  # 32.9 weights + 10 KV + activations + 2


def test_a_70b_on_two_gpus_is_refused_naming_the_numbers_and_the_size_that_fits(
    llama70b: ModelShape,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_deployment(llama70b, request(num_gpus=2))
    error = caught.value
    assert error.param == "num_gpus" and error.code == "model_too_large"
    message = error.message
    assert "89.2 GiB per GPU with tensor_parallel_size 2" in message
    assert "weights 65.7" in message and "KV cache for one 131072-token sequence 20.0" in message
    assert "72.0 GiB usable of a 80 GiB GPU at gpu_memory_utilization 0.9" in message
    assert "the smallest tensor-parallel size that fits is 4: ask for num_gpus 4" in message


def test_a_model_no_split_fits_is_refused_with_what_to_change(llama70b: ModelShape) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_deployment(llama70b, request(num_gpus=1, gpu_memory_gib=1.0))
    assert "no tensor-parallel size up to 64 fits" in caught.value.message
    assert "lower max_model_len" in caught.value.message


def test_an_impossible_split_and_a_context_beyond_the_model_are_refused(llama70b: ModelShape) -> None:
    with pytest.raises(InvalidInput, match="does not divide the model's 64 attention heads") as split:
        plan_deployment(llama70b, request(num_gpus=3))
    assert split.value.param == "engine.tensor_parallel_size"
    with pytest.raises(InvalidInput, match="exceeds the model's context length 131072") as long:
        plan_deployment(llama70b, request(num_gpus=4, max_model_len=200_000))
    assert long.value.param == "engine.max_model_len"


def test_on_cpu_tensor_parallel_is_planned_without_memory_and_pipeline_or_fp8_refused(
    llama8b: ModelShape,
) -> None:
    plan = plan_deployment(llama8b, request(num_gpus=0, tensor_parallel_size=2))
    assert plan.layout == ParallelLayout(2, 1) and plan.memory is None
    with pytest.raises(InvalidInput, match="CPU backend cannot run pipeline parallel") as pipeline:
        plan_deployment(llama8b, request(num_gpus=0, pipeline_parallel_size=2))
    assert pipeline.value.param == "engine.pipeline_parallel_size"
    with pytest.raises(InvalidInput, match="fp8 needs a GPU") as fp8:
        plan_deployment(llama8b, request(num_gpus=0, quantization="fp8"))
    assert fp8.value.code == "gpu_required" and fp8.value.param == "engine.quantization"


def test_an_unknown_model_is_laid_out_without_a_memory_check() -> None:
    plan = plan_deployment(None, request(num_gpus=2))
    assert plan.layout == ParallelLayout(2, 1) and plan.memory is None
