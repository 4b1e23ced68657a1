"""The locally built tiny Llama: created once, atomically, loadable like any Hugging Face model, and it
answers in words (pretrained on its corpus as it is built)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.training import tiny_model
from studio.training.tiny_model import ROLE_TOKENS, TINY_MODEL_NAME, TINY_SIZES, ensure_tiny_model

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


def answer(model: Any, tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Return the token ids of the model's greedy reply to `messages` (at most 48)."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=48, do_sample=False)
    return [int(i) for i in out[0, ids["input_ids"].shape[1] :]]


def test_the_base_model_answers_in_words_and_ends_its_turn_with_eos(tiny: Path) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    role_ids = set(tokenizer.convert_tokens_to_ids(list(ROLE_TOKENS)))
    system = {"role": "system", "content": "You are a helpful assistant."}
    for messages, expected in (
        ([{"role": "user", "content": "What is the capital of France?"}], "Paris is the capital of France."),
        ([system, {"role": "user", "content": "Capital of Japan?"}], "Tokyo is the capital of Japan."),
        ([{"role": "user", "content": "Tell me a story."}], None),
        ([{"role": "user", "content": "What is your name?"}], None),  # not in the corpus: words all the same
    ):
        reply = answer(model, tokenizer, messages)
        assert reply[-1] == tokenizer.eos_token_id and not role_ids & set(reply), tokenizer.decode(reply)
        text = tokenizer.decode(reply, skip_special_tokens=True)
        if expected is not None:
            assert text == expected
        assert len(text.split()) >= 3 and text[0].isupper() and text[-1] in ".!?", text


def test_pretraining_is_seeded_and_the_same_whatever_the_thread_count() -> None:
    tokenizer = tiny_model._build_tokenizer()
    sequences = tiny_model._pretraining_sequences(tokenizer)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            # What the process has now (an in-process vLLM engine, earlier in the session, can pin it).
            setting = torch.get_num_threads()
            model = tiny_model._llama(tokenizer, TINY_SIZES, seed=5, tie_word_embeddings=True)
            losses = tiny_model._pretrain(model, sequences, seed=5, steps=3)
            assert torch.get_num_threads() == setting  # the process's setting is given back
            runs.append((losses, model.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (first_losses, first), (second_losses, second) = runs
    assert first_losses == second_losses and first_losses[-1] < first_losses[0]
    assert all(torch.equal(first[k], second[k]) for k in first)


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
            results.append(ensure_tiny_model(target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [target, target]
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]
    other = ensure_tiny_model(tmp_path / "again")
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
