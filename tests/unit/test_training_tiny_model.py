"""The locally built tiny Llama: created once, atomically, and loadable like any Hugging Face model."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.training.tiny_model import TINY_MODEL_NAME, ensure_tiny_model

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Japan?"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def test_name() -> None:
    assert TINY_MODEL_NAME == "mini-studio/tiny-llama"


def test_has_the_standard_hugging_face_layout(tiny: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        assert (tiny / name).is_file(), name
    tokenizer_config = json.loads((tiny / "tokenizer_config.json").read_text())
    assert "{{- bos_token -}}" in tokenizer_config["chat_template"]
    special = json.loads((tiny / "special_tokens_map.json").read_text())
    assert (special["bos_token"], special["eos_token"], special["pad_token"]) == (
        "<|bos|>",
        "<|eos|>",
        "<|pad|>",
    )
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (64, 2, 1)
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # the smallest head vLLM runs on CPU
    generation = json.loads((tiny / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"]


def test_second_call_does_not_rebuild(tiny: Path) -> None:
    weights = tiny / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_tiny_model(tiny) == tiny
    assert ensure_tiny_model(tiny, seed=7) == tiny  # an existing model is kept whatever the seed
    assert weights.stat().st_mtime_ns == before
    assert [p.name for p in tiny.parent.iterdir()] == ["tiny-llama"]  # no temporary directory left


def test_loads_with_auto_classes_and_generates(tiny: Path) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert 1024 <= len(tokenizer) <= 2048
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|bos|><|system|>You are a helpful assistant.<|eos|>"
        "<|user|>What is the capital of France?<|eos|>"
        '<|assistant|>{"name": "lookup", "arguments": "{}"}<|eos|>'
        "<|tool|>Paris<|eos|>"
        "<|assistant|>The capital of France is Paris.<|eos|>"
        "<|user|>And of Japan?<|eos|><|assistant|>"
    )
    without = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=False)
    assert prompt == without + "<|assistant|>"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    # Special tokens are single tokens: the role markers are never split into pieces.
    tokens = tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    assert tokens[:2] == ["<|bos|>", "<|system|>"] and tokens[-1] == "<|assistant|>"
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids["input_ids"].shape[1] + 4)


def test_byte_level_tokenizer_round_trips_any_text(tiny: Path) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny)
    text = "Zürich — 東京 🚀 tabs\tand\nnewlines"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_same_seed_same_weights_and_concurrent_callers_agree(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_tiny_model(target, seed=3))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [target, target]
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]
    other = ensure_tiny_model(tmp_path / "again", seed=3)
    different = ensure_tiny_model(tmp_path / "different", seed=4)
    first, second = load_file(target / "model.safetensors"), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = load_file(different / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], third["model.embed_tokens.weight"])


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a complete tiny model"):
        ensure_tiny_model(target)
    assert (target / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
