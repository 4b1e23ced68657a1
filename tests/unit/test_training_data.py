"""Tokenization of chat and prompt/completion rows: exactly the assistant tokens carry labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from studio.training.data import (
    IGNORE_INDEX,
    Example,
    collate,
    epoch_steps,
    load_dataset,
    steps_per_epoch,
    summarize,
    tokenize_example,
)
from studio.training.tiny_model import ensure_tiny_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    path = ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    return AutoTokenizer.from_pretrained(path)


def trained_runs(example: Example, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Decode each maximal run of trained positions, checking labels equal the ids there."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = trained
    return [str(tokenizer.decode(run)) for run in runs]


def chat(*turns: tuple[str, str], weights: dict[int, int] | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": role, "content": content} for role, content in turns]
    for i, weight in (weights or {}).items():
        messages[i]["weight"] = weight
    return {"messages": messages}


CONVERSATION = chat(
    ("system", "Answer briefly."),
    ("user", "What is the capital of Peru?"),
    ("assistant", "Lima."),
    ("user", "And of Chile?"),
    ("assistant", "Santiago."),
    ("user", "And of Japan?"),
    ("assistant", "Tokyo, of course."),
)


def test_only_assistant_content_and_end_of_turn_are_trained(tokenizer: PreTrainedTokenizerBase) -> None:
    example = tokenize_example(CONVERSATION, tokenizer, 512)
    assert trained_runs(example, tokenizer) == [
        "Lima.<|eos|>",
        "Santiago.<|eos|>",
        "Tokyo, of course.<|eos|>",
    ]
    # The labelled ids are exactly the separately tokenized replies followed by EOS.
    expected: list[int] = []
    for reply in ("Lima.", "Santiago.", "Tokyo, of course."):
        expected += tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [label for label in example.labels if label != IGNORE_INDEX] == expected
    assert example.num_trained_tokens == len(expected)
    # The ids are the ones inference sees: one tokenization of the rendered conversation.
    rendered = tokenizer.apply_chat_template(CONVERSATION["messages"], tokenize=False)
    assert example.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert example.attention_mask == [1] * example.num_tokens and not example.truncated


def test_weight_zero_assistant_messages_are_not_trained(tokenizer: PreTrainedTokenizerBase) -> None:
    row = dict(CONVERSATION, messages=[dict(m) for m in CONVERSATION["messages"]])
    row["messages"][2]["weight"] = 0
    row["messages"][6]["weight"] = 1
    example = tokenize_example(row, tokenizer, 512)
    assert trained_runs(example, tokenizer) == ["Santiago.<|eos|>", "Tokyo, of course.<|eos|>"]
    # The weight is not rendered: the ids are those of the conversation without it.
    assert example.input_ids == tokenize_example(CONVERSATION, tokenizer, 512).input_ids


def test_tool_calls_and_text_parts(tokenizer: PreTrainedTokenizerBase) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Lima"}'}}
    row = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Lima?"}],
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ]
    }
    example = tokenize_example(row, tokenizer, 512)
    call_json = '{"name": "weather", "arguments": "{\\"city\\": \\"Lima\\"}"}'
    assert trained_runs(example, tokenizer) == [f"{call_json}<|eos|>", "It is sunny.<|eos|>"]
    assert "Weather in Lima?" in tokenizer.decode(example.input_ids)


def test_conversation_opening_with_the_assistant(tokenizer: PreTrainedTokenizerBase) -> None:
    example = tokenize_example(chat(("assistant", "Hello there.")), tokenizer, 512)
    assert trained_runs(example, tokenizer) == ["Hello there.<|eos|>"]


def test_works_with_another_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    # Plain-text role markers, not special tokens: the spans still come from the template's rendering.
    chatml = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    chatml.chat_template = CHATML
    row = chat(
        ("user", "Capital of Peru?"), ("assistant", "Lima."), ("user", "Chile?"), ("assistant", "Santiago.")
    )
    example = tokenize_example(row, chatml, 512)
    runs = trained_runs(example, chatml)
    assert [r.strip() for r in runs] == ["Lima.<|im_end|>", "Santiago.<|im_end|>"]
    assert all("user" not in r and "Peru" not in r and "Chile" not in r for r in runs)


def test_prompt_completion_trains_only_the_completion(tokenizer: PreTrainedTokenizerBase) -> None:
    example = tokenize_example({"prompt": "Capital of Peru?", "completion": " Lima"}, tokenizer, 512)
    assert trained_runs(example, tokenizer) == [" Lima<|eos|>"]
    assert tokenizer.decode(example.input_ids) == "<|bos|>Capital of Peru? Lima<|eos|>"


def test_truncation_keeps_the_start(tokenizer: PreTrainedTokenizerBase) -> None:
    full = tokenize_example(CONVERSATION, tokenizer, 512)
    first_trained = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    limit = first_trained + 2  # ends inside the first reply
    cut = tokenize_example(CONVERSATION, tokenizer, limit)
    assert cut.truncated and cut.num_tokens == limit
    assert cut.input_ids == full.input_ids[:limit] and cut.labels == full.labels[:limit]
    assert cut.num_trained_tokens == 2


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (chat(("user", "Hi"), ("user", "Anyone?")), "no assistant message"),
        (chat(("user", "Hi"), ("assistant", "Hello"), weights={1: 0}), "weight 0"),
        (chat(("user", "Hi"), ("assistant", "Hello"), weights={1: 2}), "weight must be 0 or 1"),
        (chat(("narrator", "Hi"), ("assistant", "Hello")), "role is 'narrator'"),
        ({"messages": []}, "non-empty array"),
        ({"prompt": "Hi", "completion": ""}, "non-empty string"),
        ({"input": {}, "preferred_output": [], "non_preferred_output": []}, "preference"),
        ({"text": "hello"}, '"messages", or "prompt"'),
    ],
)
def test_unusable_rows_raise_value_error(
    tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tokenize_example(row, tokenizer, 512)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    return path


def test_load_dataset(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    long_prompt = {"prompt": "word " * 200, "completion": "end"}
    rows = [CONVERSATION, {"prompt": "Q:", "completion": " A"}, long_prompt]
    examples = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, 64)
    assert len(examples) == 2  # the long prompt leaves its completion beyond 64 tokens: dropped
    summary = summarize(examples)
    assert summary.examples == 2
    assert summary.tokens == sum(e.num_tokens for e in examples)
    assert summary.trained_tokens == examples[0].num_trained_tokens + 2  # " A" + EOS
    with pytest.raises(ValueError, match=r"d\.jsonl: no example has a token to train on"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", [long_prompt]), tokenizer, 64)


def test_load_dataset_names_the_bad_line(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(CONVERSATION) + "\n\n" + json.dumps(chat(("user", "Hi"))) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 3: .*no assistant message"):
        load_dataset(path, tokenizer, 64)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1"):
        load_dataset(path, tokenizer, 64)
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="has no examples"):
        load_dataset(path, tokenizer, 64)


def test_collate_pads_to_the_longest() -> None:
    short = Example(input_ids=[5, 6], attention_mask=[1, 1], labels=[IGNORE_INDEX, 6])
    long = Example(
        input_ids=[7, 8, 9, 10], attention_mask=[1, 1, 1, 1], labels=[IGNORE_INDEX, IGNORE_INDEX, 9, 10]
    )
    batch = collate([short, long], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [7, 8, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, -100, -100], [-100, -100, 9, 10]]
    assert all(t.dtype == torch.long for t in batch.values())
    with pytest.raises(ValueError):
        collate([], pad_token_id=0)


def test_epoch_order_is_seeded_and_shards_are_even() -> None:
    one = epoch_steps(10, 2, 2, 1, 0, seed=1, epoch=0)
    assert one == epoch_steps(10, 2, 2, 1, 0, seed=1, epoch=0)
    assert one != epoch_steps(10, 2, 2, 1, 0, seed=1, epoch=1)
    assert [len(step) for step in one] == [2, 2, 1]  # 5 micro-batches, 2 per step
    assert sorted(i for step in one for batch in step for i in batch) == list(range(10))
    assert steps_per_epoch(10, 2, 2, 1) == 3
    shards = [epoch_steps(11, 2, 1, 3, rank, seed=0, epoch=0) for rank in range(3)]
    seen = [i for shard in shards for step in shard for batch in step for i in batch]
    assert len(seen) == 12 and set(seen) == set(range(11))  # padded to 12 by wrapping around
    assert {len(shard) for shard in shards} == {steps_per_epoch(11, 2, 1, 3)} == {2}
