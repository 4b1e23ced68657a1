"""The LoRA row fix (`studio.serving.lora_patch`) in a real vLLM CPU engine: base rows batched with two
adapters answer as they do alone, and without the fix the same batch leaks an adapter into them.

The engine runs in this process (vLLM's sync `LLM`, `VLLM_ENABLE_V1_MULTIPROCESSING=0`), loaded with the
fix the way a model server loads it (the `worker_extension_cls` engine argument). Both adapters are
random rank-8 LoRAs on every projection, so each changes the greedy answer for sure; with `max_loras=2`
both slots are full, the case where vLLM's CPU kernels give no-adapter rows the last slot's weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.serving import lora_patch
from studio.serving.engine import LORA_ROWS_EXTENSION
from studio.training import ensure_tiny_model

pytestmark = pytest.mark.integration
PROMPT = "The capital of France is"
MIXES = (["base", "a1", "a2", "base"], ["a1", "base", "a2"], ["a2", "a1", "base", "base", "a1"])


def random_adapter(model_dir: Path, out_dir: Path, *, seed: int, rank: int = 8) -> Path:
    """Write a LoRA adapter with random weights on every projection of `model_dir`; return its folder."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hidden, inner, head_dim = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    shapes = {
        "self_attn.q_proj": (hidden, q), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (q, hidden), "mlp.gate_proj": (hidden, inner), "mlp.up_proj": (hidden, inner),
        "mlp.down_proj": (inner, hidden),
    }  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for name, (fan_in, fan_out) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.5
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "bias": "none", "task_type": "CAUSAL_LM",
        "target_modules": [name.split(".")[1] for name in shapes], "base_model_name_or_path": str(model_dir),
    }  # fmt: skip
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config), encoding="utf-8")
    return out_dir


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A CPU engine with the fix loaded, and the requests of the base and the two adapters."""
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    root = tmp_path_factory.mktemp("lora-rows")
    model = ensure_tiny_model(root / "tiny")
    requests: dict[str, Any] = {
        "base": None,
        "a1": LoRARequest("a1", 1, str(random_adapter(model, root / "a1", seed=1))),
        "a2": LoRARequest("a2", 2, str(random_adapter(model, root / "a2", seed=2))),
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        env.setenv("VLLM_NO_USAGE_STATS", "1")
        llm = LLM(
            model=str(model), enforce_eager=True, kv_cache_memory_bytes=64 << 20, max_model_len=256,
            distributed_executor_backend="uni", disable_log_stats=True, enable_lora=True, max_loras=2,
            max_cpu_loras=2, max_lora_rank=8, worker_extension_cls=LORA_ROWS_EXTENSION,
        )  # fmt: skip
    try:
        yield llm, requests
    finally:
        llm.llm_engine.engine_core.shutdown()
        lora_patch.install()  # as the worker extension left it, whatever a test did


def answers(llm: Any, requests: dict[str, Any], names: list[str]) -> list[list[int]]:
    """Return the greedy token ids of one batch holding a request per name, in order."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=16, ignore_eos=True, temperature=0)
    outputs = llm.generate(
        [PROMPT] * len(names), params, lora_request=[requests[n] for n in names], use_tqdm=False
    )
    return [list(output.outputs[0].token_ids) for output in outputs]


def test_base_rows_batched_with_two_adapters_answer_as_alone(engine: tuple[Any, dict[str, Any]]) -> None:
    llm, requests = engine
    assert llm.collective_rpc("mini_studio_lora_rows_fixed") == [True]
    solo = {name: answers(llm, requests, [name])[0] for name in requests}
    assert len({tuple(tokens) for tokens in solo.values()}) == 3, solo  # each adapter changes the answer
    for names in MIXES:
        assert answers(llm, requests, names) == [solo[n] for n in names], names


def test_without_the_fix_the_same_batch_leaks_an_adapter_into_base_rows(
    engine: tuple[Any, dict[str, Any]],
) -> None:
    """The case the fix exists for, in this very vLLM: proves the test above can fail."""
    llm, requests = engine
    solo = {name: answers(llm, requests, [name])[0] for name in requests}
    lora_patch.uninstall()
    try:
        leaked = [answers(llm, requests, names) != [solo[n] for n in names] for names in MIXES]
    finally:
        lora_patch.install()
    assert any(leaked), "vLLM's CPU kernels no longer leak: the fix may go (upstream PRs #48421 / #49656)"
    assert answers(llm, requests, MIXES[0]) == [solo[n] for n in MIXES[0]]
