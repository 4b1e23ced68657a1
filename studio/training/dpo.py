"""Direct Preference Optimization (DPO, Rafailov et al. 2023) on preference rows, in the studio's loop.

A preference row (OpenAI's format) is `{"input": {"messages": [...], "tools"?: [...]},
"preferred_output": [assistant message], "non_preferred_output": [assistant message]}`. Each side is
tokenized as the conversation input + output by the tokenizer's chat template
(`studio.training.data.tokenize_example`) with the input masked (labels -100): only the output's
tokens, its end-of-turn included, are scored.

A batch of n pairs is one forward of 2n rows, the n chosen ones first, right-padded to the longest of
all. A sequence's log-prob is the sum of log p(token) over its scored tokens. With the policy's
log-probs pi_c, pi_r and the reference's ref_c, ref_r of a pair:

    rewards/chosen = beta * (pi_c - ref_c),   rewards/rejected = beta * (pi_r - ref_r)
    loss = -log sigmoid(rewards/chosen - rewards/rejected)          (DPO's "sigmoid" loss)

averaged over the pairs of a step (all micro-batches, all ranks); `rewards/margins` is chosen minus
rejected, `rewards/accuracies` the share of pairs whose chosen reward is the higher one. These are
TRL's definitions, and a unit test checks the loss against TRL's on the same batch.

The reference is the model before training. LoRA: the same model with its adapter disabled (peft's
`disable_adapter()`), run under no_grad before each policy forward. Full fine-tune, where there is no
adapter to switch off: the reference log-probs of every pair are computed once before the first step
(each rank its share, then summed over ranks), so no frozen copy of the weights is held; they are
kept beside every checkpoint, since a resumed run's weights are no longer the base's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from studio.training.config import TrainConfig
from studio.training.data import IGNORE_INDEX, Example, collate, load_rows, tokenize_example
from studio.training.ranks import (
    lockstep_rounds,
    rank_and_world,
    sum_over_ranks,
    sum_tensor_over_ranks,
    unwrap,
)
from studio.training.run import Report, Run, StepStats, autocast
from studio.training.supervised import trained_positions

REFERENCE_FILE = "reference_logps.pt"
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One tokenized preference row: the same input followed by the preferred or the other output."""

    chosen: Example
    rejected: Example

    def trains(self) -> bool:
        """Return True when both sides keep a scored token (truncation may have cut one away)."""
        return self.chosen.num_trained_tokens > 0 and self.rejected.num_trained_tokens > 0


def _kind(row: Mapping[str, Any]) -> str:
    if "messages" in row:
        return "a chat example"
    if "prompt" in row or "completion" in row:
        return "a prompt/completion example"
    return "of no known shape"


def _side(
    row: Mapping[str, Any],
    key: str,
    prompt: list[Any],
    tools: Any,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
) -> Example:
    outputs = row[key]
    if not (
        isinstance(outputs, list)
        and outputs
        and all(isinstance(m, dict) and m.get("role") == "assistant" for m in outputs)
    ):
        raise ValueError(f'"{key}" must be a non-empty array of assistant messages')
    scored = [{k: v for k, v in message.items() if k != "weight"} for message in outputs]
    try:
        return tokenize_example({"messages": [*prompt, *scored], "tools": tools}, tokenizer, max_seq_len)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc


def tokenize_preference(
    row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, max_seq_len: int
) -> PreferencePair:
    """Return the chosen and rejected sequences of a preference row, the input masked in both.

    Raises:
        ValueError: the row is not a preference row (a chat or prompt/completion one), or is malformed.
        RuntimeError: the tokenizer has no chat template, or renders conversations not prefix-stably.
    """
    if not all(key in row for key in ("input", "preferred_output", "non_preferred_output")):
        raise ValueError(
            'DPO trains on preference examples ("input", "preferred_output", "non_preferred_output"); '
            f"this row is {_kind(row)}"
        )
    given = row["input"]
    messages = given.get("messages") if isinstance(given, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError('"input" must be an object with a non-empty "messages" array')
    # The input is context only: none of its assistant turns is scored.
    prompt = [
        {**m, "weight": 0} if isinstance(m, dict) and m.get("role") == "assistant" else m for m in messages
    ]
    tools = given.get("tools") or None
    return PreferencePair(
        chosen=_side(row, "preferred_output", prompt, tools, tokenizer, max_seq_len),
        rejected=_side(row, "non_preferred_output", prompt, tools, tokenizer, max_seq_len),
    )


def load_preferences(
    path: Path, tokenizer: PreTrainedTokenizerBase, max_seq_len: int
) -> list[PreferencePair]:
    """Return the tokenized pairs of the JSONL preference file at `path`, in file order.

    Pairs with a side whose scored tokens all fall beyond `max_seq_len` are dropped (with a warning).

    Raises:
        ValueError: a row is not valid JSON or not a preference row (the message names its line), or no
            pair is left. OSError: the file cannot be read.
    """
    return load_rows(
        path,
        lambda row: tokenize_preference(row, tokenizer, max_seq_len),
        PreferencePair.trains,
        max_seq_len=max_seq_len,
    )


def collate_pairs(pairs: list[PreferencePair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Return one batch of 2n rows: the n chosen sequences, then the n rejected ones (see `collate`).

    Raises:
        ValueError: `pairs` is empty.
    """
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)


def logps_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return, per row, the summed log-probability (fp32) of its labelled tokens under `logits`.

    `labels[:, i]` is token i or -100 (not scored); position i's logits predict token i+1.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    flat = logits.float().reshape(-1, logits.shape[-1])
    per_token = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return -per_token.view(targets.shape).sum(dim=1)


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Return the summed log-probability of each row's scored tokens under `model` (one forward)."""
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    with autocast(device):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return logps_of(logits, batch["labels"].to(device))


@dataclass(frozen=True, slots=True)
class DpoTerms:
    """Per pair: the loss, and the (detached) implicit rewards of the chosen and rejected outputs."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    def sums(self) -> torch.Tensor:
        """Return the float64 sums (loss, chosen reward, rejected reward, pairs ranked right)."""
        right = (self.chosen_rewards > self.rejected_rewards).sum()
        values = (self.losses.detach().sum(), self.chosen_rewards.sum(), self.rejected_rewards.sum(), right)
        return torch.stack([v.double().cpu() for v in values])


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
) -> DpoTerms:
    """Return DPO's sigmoid loss and the implicit rewards of each pair from the four log-probs."""
    chosen_logratios = policy_chosen - reference_chosen
    rejected_logratios = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return DpoTerms(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


def reward_metrics(sums: list[float], pairs: float, *, prefix: str = "") -> dict[str, float]:
    """Return the mean loss and rewards of `pairs` pairs from their `DpoTerms.sums` (summed)."""
    loss, chosen, rejected, right = (value / max(1.0, pairs) for value in sums)
    values = (chosen, rejected, chosen - rejected, right)
    return {f"{prefix}loss": loss} | {
        prefix + name: v for name, v in zip(REWARD_METRICS, values, strict=True)
    }


class DpoRun(Run[PreferencePair]):
    """DPO with `config.beta`, LoRA or full; the metrics of `reward_metrics` with every step."""

    objective = "dpo"

    def __init__(self, config: TrainConfig, report: Report | None) -> None:
        super().__init__(config, report)
        # Full fine-tunes only: per split, a (pairs, 2) float64 table of reference (chosen, rejected).
        self.reference: dict[str, torch.Tensor] = {}

    def load(self, path: Path) -> list[PreferencePair]:
        return load_preferences(path, self.tokenizer, self.config.max_seq_len)

    def prepare(self, resumed: bool) -> None:
        if self.config.method == "full" and not self.reference:
            self.reference = {
                "train": self._precompute(self.train_set),
                "valid": self._precompute(self.valid_set),
            }

    def save_extra(self, folder: Path) -> None:
        if self.reference:
            torch.save(self.reference, folder / REFERENCE_FILE)

    def restore_extra(self, checkpoint: Path) -> None:
        if self.config.method != "full":
            return
        path = checkpoint / REFERENCE_FILE
        if not path.is_file():
            raise RuntimeError(f"checkpoint {checkpoint} has no {REFERENCE_FILE} to resume DPO from")
        reference = torch.load(path, weights_only=True)
        if [len(reference["train"]), len(reference["valid"])] != [len(self.train_set), len(self.valid_set)]:
            raise RuntimeError(f"the reference log-probs of checkpoint {checkpoint} are of other datasets")
        self.reference = reference

    def _precompute(self, items: list[PreferencePair]) -> torch.Tensor:
        """Return the (chosen, rejected) log-probs of every pair under the model as it is now."""
        table = torch.zeros(len(items), 2, dtype=torch.float64)
        if not items:
            return table
        rank, world = rank_and_world()
        mine = list(range(rank, len(items), world))
        model = unwrap(self.model)
        model.eval()
        with torch.no_grad():
            self._filler_forwards(model, items, len(mine))
            for start in range(0, len(mine), self.config.batch_size):
                indices = mine[start : start + self.config.batch_size]
                batch = collate_pairs([items[i] for i in indices], self.pad_id)
                logps = sequence_logps(model, batch, self.device).double().cpu()
                table[indices] = logps.view(2, len(indices)).T
        model.train()
        return sum_tensor_over_ranks(table)

    def _filler_forwards(self, model: nn.Module, items: list[PreferencePair], mine: int) -> None:
        """Run the forwards a sharded model's busier ranks run beyond this rank's `mine` items."""
        batches = -(-mine // self.config.batch_size)
        for _ in range(batches, lockstep_rounds(batches, sharded=self.sharded)):
            sequence_logps(model, collate_pairs(items[:1], self.pad_id), self.device)

    def _reference(
        self, split: str, indices: list[int], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the reference's log-probs of the chosen and the rejected sequences of `batch`."""
        if self.config.method == "full":
            table = self.reference[split][indices].to(self.device, torch.float32)
            return table[:, 0], table[:, 1]
        model = unwrap(self.model)
        with torch.no_grad(), model.disable_adapter():
            logps = sequence_logps(model, batch, self.device)
        return logps[: len(indices)], logps[len(indices) :]

    def train_step(self, micro_batches: list[list[int]]) -> StepStats:
        """Run one optimizer step; return the mean DPO loss over the global batch's pairs and rewards."""
        batches = [
            collate_pairs([self.train_set[i] for i in indices], self.pad_id) for indices in micro_batches
        ]
        pairs = sum(len(indices) for indices in micro_batches)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        trained = sum(trained_positions(b) for b in batches)
        world = rank_and_world()[1]
        all_pairs, all_tokens, all_trained = sum_over_ranks(pairs, tokens, trained)
        # DDP averages gradients over ranks: world / (all ranks' pairs) makes the step's gradient that
        # of the mean loss over every pair of the global batch, however they fall between ranks.
        scale = world / max(1.0, all_pairs)
        sums = torch.zeros(4, dtype=torch.float64)
        for k, (indices, batch) in enumerate(zip(micro_batches, batches, strict=True)):
            reference_chosen, reference_rejected = self._reference("train", indices, batch)
            with self.syncing(k, len(batches)):
                logps = sequence_logps(self.model, batch, self.device)
                n = len(indices)
                terms = dpo_loss(
                    logps[:n], logps[n:], reference_chosen, reference_rejected, beta=self.config.beta
                )
                torch.autograd.backward(terms.losses.sum() * scale)
            sums += terms.sums()
        self.optimizer_step()
        metrics = reward_metrics(sum_over_ranks(*sums.tolist()), all_pairs)
        return StepStats(metrics.pop("loss"), int(all_tokens), int(all_trained), metrics)

    def evaluate(self) -> dict[str, float]:
        """Return `valid_loss` and `valid_rewards/*` on the validation pairs (each rank its share)."""
        rank, world = rank_and_world()
        mine = list(range(rank, len(self.valid_set), world))
        model = unwrap(self.model)
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64)
        with torch.no_grad():
            if self.valid_set:
                # LoRA: the filler also stands for the reference forward (same collectives).
                rounds = 1 if self.config.method == "full" else 2
                for _ in range(rounds):
                    self._filler_forwards(model, self.valid_set, len(mine))
            for start in range(0, len(mine), self.config.batch_size):
                indices = mine[start : start + self.config.batch_size]
                batch = collate_pairs([self.valid_set[i] for i in indices], self.pad_id)
                reference_chosen, reference_rejected = self._reference("valid", indices, batch)
                logps = sequence_logps(model, batch, self.device)
                n = len(indices)
                sums += dpo_loss(
                    logps[:n], logps[n:], reference_chosen, reference_rejected, beta=self.config.beta
                ).sums()
        model.train()
        return reward_metrics(sum_over_ranks(*sums.tolist()), len(self.valid_set), prefix="valid_")
