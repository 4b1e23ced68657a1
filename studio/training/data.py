"""Turn a JSONL fine-tuning dataset into token ids and loss labels.

Rows are chat examples `{"messages": [...], "tools"?: [...]}` (an assistant message may carry
`"weight": 0` to be shown but not trained on) or prompt/completion examples `{"prompt", "completion"}`.

Labels are -100 (ignored by the loss) everywhere except the tokens the model must learn to produce:
- chat: the tokens of each assistant message whose weight is not 0, from the end of the generation
  prompt that precedes it to the end of the message as the template renders it (so its end-of-turn
  token is trained too; a token that straddles the start, such as a space merged into the first
  word, is trained). The boundaries come from rendering the conversation prefix by prefix with the
  tokenizer's own chat template and mapping those character positions to tokens through the offsets of
  one tokenization of the whole conversation, so any template works and the ids are exactly what
  inference would see.
- prompt/completion: raw text `bos + prompt + completion + eos` (no chat template, as OpenAI and
  Together treat this format), trained on the completion and the EOS token.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
ItemT = TypeVar("ItemT")
ROLES = frozenset({"system", "user", "assistant", "tool"})

log = logging.getLogger(__name__)

# (start, end) character span of text to train on, end exclusive.
Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Example:
    """One tokenized row: `labels[i]` is the target at position i (-100: not trained)."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def num_tokens(self) -> int:
        """Return the number of tokens of the example."""
        return len(self.input_ids)

    @property
    def num_trained_tokens(self) -> int:
        """Return the number of tokens the loss is computed on."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """Totals of a tokenized dataset."""

    examples: int
    tokens: int
    trained_tokens: int


def summarize(examples: Sequence[Example]) -> DatasetSummary:
    """Return the number of examples, tokens and trained tokens of `examples`."""
    return DatasetSummary(
        examples=len(examples),
        tokens=sum(e.num_tokens for e in examples),
        trained_tokens=sum(e.num_trained_tokens for e in examples),
    )


def _content(content: Any, at: str) -> str | None:
    """Return the text of a message's content (None stays None); OpenAI text parts are joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ValueError(f"{at}.content must be a string or an array of text parts")


def _messages(row: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[bool]]:
    """Return the messages to render (without `weight`) and, per message, whether it is trained.

    Raises:
        ValueError: the messages are malformed, or no assistant message has a weight other than 0.
    """
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError('"messages" must be a non-empty array of messages')
    messages: list[dict[str, Any]] = []
    trained: list[bool] = []
    for i, msg in enumerate(raw):
        at = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ValueError(f"{at} must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(f"{at}.role is {role!r}; allowed roles: assistant, system, tool, user")
        weight = msg.get("weight", 1)
        if type(weight) is not int or weight not in (0, 1):  # as the upload validator: no 1.0, no true
            raise ValueError(f"{at}.weight must be 0 or 1, not {weight!r}")
        clean = {k: v for k, v in msg.items() if k != "weight"}
        clean["content"] = _content(msg.get("content"), at)
        messages.append(clean)
        trained.append(role == "assistant" and weight != 0)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the example has no assistant message to train on")
    if not any(trained):
        raise ValueError("every assistant message of the example has weight 0, so nothing is trained")
    return messages, trained


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: Any,
    generation_prompt: bool,
) -> str:
    """Return the conversation rendered by the tokenizer's chat template.

    Raises:
        ValueError: the template refused the conversation.
    """
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as exc:  # the template's raise_exception (e.g. "roles must alternate")
        raise ValueError(f"the chat template rejected the example: {exc}") from exc
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, not str")
    return text


def _first_prompt(tokenizer: PreTrainedTokenizerBase, first: dict[str, Any], tools: Any, upto: str) -> str:
    """Return the text a template puts before the content of a conversation's first message."""
    # Templates refuse to render an empty conversation, so there is no generation prompt to diff
    # against: render the message with a sentinel content and take what precedes the sentinel.
    sentinel = "\u2063MINISTUDIO\u2063"
    marked = _render(tokenizer, [{**first, "content": sentinel}], tools, False)
    at = marked.find(sentinel)
    prompt = marked[:at] if at >= 0 else ""
    return prompt if upto.startswith(prompt) else ""


def _chat_spans(tokenizer: PreTrainedTokenizerBase, row: Mapping[str, Any]) -> tuple[str, list[Span]]:
    """Return the rendered conversation and the character spans of its trained assistant messages."""
    messages, trained = _messages(row)
    tools = row.get("tools") or None
    full = _render(tokenizer, messages, tools, False)
    spans: list[Span] = []
    for i, is_trained in enumerate(trained):
        if not is_trained:
            continue
        upto = _render(tokenizer, messages[: i + 1], tools, False)
        if i:
            prompt = _render(tokenizer, messages[:i], tools, True)
        else:
            prompt = _first_prompt(tokenizer, messages[0], tools, upto)
        # A template whose rendering of a prefix is not a prefix of the whole (one that rewrites earlier
        # turns) leaves no well-defined span; refuse rather than train on the wrong tokens.
        if not (full.startswith(upto) and upto.startswith(prompt)):
            raise RuntimeError(
                f"the chat template is not prefix-stable at message {i}: cannot locate the assistant reply"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def _encode_with_offsets(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: list[Span]
) -> tuple[list[int], list[int]]:
    """Return ids and labels: a token is trained when any of its characters lies inside a span."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    labels = [IGNORE_INDEX] * len(ids)
    for k, (start, end) in enumerate(offsets):
        # A token straddling a span's start (a prompt's trailing space merged into the reply's first
        # word) is trained, so that no character of the reply goes untrained. A zero-width token
        # counts as one character wide.
        if any(start < e and s < max(end, start + 1) for s, e in spans):
            labels[k] = ids[k]
    return ids, labels


def _encode_by_segments(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: list[Span]
) -> tuple[list[int], list[int]]:
    """Slow-tokenizer fallback (no offsets): tokenize the pieces between span boundaries separately."""
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids: list[int] = []
    labels: list[int] = []
    for start, end in itertools.pairwise(cuts):
        piece: list[int] = list(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        is_trained = any(s <= start < e for s, e in spans)
        ids += piece
        labels += piece if is_trained else [IGNORE_INDEX] * len(piece)
    return ids, labels


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, spans: list[Span], max_seq_len: int) -> Example:
    if tokenizer.is_fast:
        ids, labels = _encode_with_offsets(tokenizer, text, spans)
    else:
        ids, labels = _encode_by_segments(tokenizer, text, spans)
    truncated = len(ids) > max_seq_len
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    if labels:
        labels[0] = IGNORE_INDEX  # nothing precedes the first token, so nothing can learn to predict it
    return Example(input_ids=ids, attention_mask=[1] * len(ids), labels=labels, truncated=truncated)


def tokenize_example(row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> Example:
    """Return the ids, attention mask and labels of one dataset row, truncated to `max_seq_len` tokens.

    Raises:
        ValueError: the row is neither a valid chat example nor a prompt/completion example, or has
            nothing to train on (no assistant message, all weights 0, empty completion).
        RuntimeError: the tokenizer's chat template does not render conversations prefix-stably.
    """
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be at least 2, not {max_seq_len}")
    if "messages" in row:
        if tokenizer.chat_template is None:
            raise RuntimeError("the tokenizer has no chat template to render chat examples with")
        text, spans = _chat_spans(tokenizer, row)
        return _encode(tokenizer, text, spans, max_seq_len)
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise ValueError('"prompt" must be a string and "completion" a non-empty string')
        prefix = (tokenizer.bos_token or "") + prompt
        text = prefix + completion + (tokenizer.eos_token or "")
        return _encode(tokenizer, text, [(len(prefix), len(text))], max_seq_len)
    if "preferred_output" in row:
        raise ValueError(
            'preference examples (preferred_output / non_preferred_output) train with method type "dpo", '
            "not supervised fine-tuning"
        )
    raise ValueError('an example needs "messages", or "prompt" and "completion"')


def load_dataset(path: Path, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> list[Example]:
    """Return the tokenized examples of the JSONL file at `path`, in file order.

    Rows whose trained tokens all fall beyond `max_seq_len` are dropped (and counted in a warning).

    Raises:
        ValueError: a row is not valid JSON or not a usable example (the message names its line), or
            no example is left with a token to train on.
        OSError: the file cannot be read.
    """
    return load_rows(
        path,
        lambda row: tokenize_example(row, tokenizer, max_seq_len),
        lambda example: example.num_trained_tokens > 0,
        max_seq_len=max_seq_len,
    )


def load_rows(
    path: Path,
    tokenize: Callable[[dict[str, Any]], ItemT],
    trains: Callable[[ItemT], bool],
    *,
    max_seq_len: int,
) -> list[ItemT]:
    """Return `tokenize` of every row of the JSONL file at `path`, in file order, keeping those that `trains`.

    The rows dropped (nothing left to train on within `max_seq_len`) are counted in a warning.

    Raises:
        ValueError: a row is not valid JSON or `tokenize` refused it (the message names its line), or
            no row is left to train on.
        OSError: the file cannot be read.
    """
    items: list[ItemT] = []
    rows = dropped = 0
    with Path(path).open(encoding="utf-8-sig") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            rows += 1
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("each line must be a JSON object")
                item = tokenize(row)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                raise ValueError(f"{Path(path).name} line {line_no}: {exc}") from exc
            if not trains(item):
                dropped += 1
                continue
            items.append(item)
    if rows == 0:
        raise ValueError(f"{Path(path).name} has no examples")
    if not items:
        raise ValueError(
            f"{Path(path).name}: no example has a token to train on within max_seq_len={max_seq_len}"
        )
    if dropped:
        log.warning(
            "dropped %d of %d examples whose trained tokens all lie beyond max_seq_len=%d",
            dropped,
            rows,
            max_seq_len,
        )
    return items


def collate(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Return `input_ids`, `attention_mask` and `labels` tensors, right-padded to the longest example.

    Padding positions have `pad_token_id`, attention 0 and label -100.

    Raises:
        ValueError: `examples` is empty.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(e.num_tokens for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = example.num_tokens
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = torch.tensor(example.attention_mask, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def steps_per_epoch(n_examples: int, batch_size: int, accumulation: int, world_size: int) -> int:
    """Return the optimizer steps in one epoch on each rank (every rank runs the same number)."""
    shard = math.ceil(n_examples / world_size)
    return math.ceil(math.ceil(shard / batch_size) / accumulation)


def epoch_steps(
    n_examples: int, batch_size: int, accumulation: int, world_size: int, rank: int, seed: int, epoch: int
) -> list[list[list[int]]]:
    """Return `rank`'s example indices for `epoch`: a list of steps, each a list of micro-batches.

    The order depends only on the seed and the epoch, so a resumed run sees the same data in the same
    order. The shuffled order is padded by wrapping around (as DistributedSampler does) so that every
    rank gets a shard of the same size and runs the same number of steps.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order: list[int] = torch.randperm(n_examples, generator=generator).tolist()
    padded = math.ceil(n_examples / world_size) * world_size
    order += (order * world_size)[: padded - n_examples]
    shard = order[rank::world_size]
    micro = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
    return [micro[i : i + accumulation] for i in range(0, len(micro), accumulation)]
