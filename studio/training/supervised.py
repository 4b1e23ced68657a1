"""Supervised fine-tuning: the next-token loss on the trained tokens of chat or prompt/completion rows.

Across ranks, every step normalises the loss by the trained tokens of all ranks (so gradient
accumulation and DDP weigh every token the same) and reports totals of all ranks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from studio.training.data import IGNORE_INDEX, Example, collate, load_dataset
from studio.training.ranks import lockstep_rounds, rank_and_world, sum_over_ranks, unwrap
from studio.training.run import Run, StepStats, autocast


def _forward(
    model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (summed loss over the trained positions, targets, logits), position i predicting i+1.

    `targets[:, i]` is the label of token i+1 (-100 past the end); `logits` are all positions'.
    """
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    with autocast(device):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Position i predicts token i+1: shifting the labels left (not slicing the logits) keeps the
    # logits contiguous, so the loss reads them in place instead of copying them. Summing (not
    # averaging) lets a step normalise by all the trained tokens of its micro-batches, so gradient
    # accumulation weighs every token the same.
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX).to(device)
    flat = logits.float().reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, targets, logits


def trained_positions(batch: dict[str, torch.Tensor]) -> int:
    """Return how many positions of `batch` the loss is computed on (a label follows them)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate(
    model: nn.Module,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    *,
    sharded: bool = False,
) -> dict[str, float]:
    """Return `valid_loss` (mean per trained token) and `valid_mean_token_accuracy` on `examples`.

    In a distributed run every rank calls it with the whole validation set: each evaluates its share
    (every world_size-th example) and the sums are added over ranks; a `sharded` (FSDP) model's ranks
    run the same number of forwards (see `lockstep_rounds`).
    """
    rank, world = rank_and_world()
    mine = examples[rank::world]
    rounds = lockstep_rounds(-(-len(mine) // batch_size), sharded=sharded)
    loss_sum, correct, total = sum_over_ranks(
        *_evaluation_sums(unwrap(model), mine, batch_size, pad_id, device, rounds=rounds, filler=examples[:1])
    )
    return {"valid_loss": loss_sum / max(1, total), "valid_mean_token_accuracy": correct / max(1, total)}


def _evaluation_sums(
    model: nn.Module,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    *,
    rounds: int,
    filler: list[Example],
) -> tuple[float, int, int]:
    """Return (summed loss, correct predictions, trained positions) of `model` on `examples`.

    Runs `rounds` forwards: past the batches of `examples`, forwards on `filler` whose results are
    dropped (keeping a sharded model's ranks in step).
    """
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    starts = range(0, len(examples), batch_size)
    with torch.no_grad():
        for _ in range(len(starts), rounds):
            _forward(model, collate(filler, pad_id), device)
        for i in starts:
            batch = collate(examples[i : i + batch_size], pad_id)
            loss, targets, logits = _forward(model, batch, device)
            predictions = logits.argmax(dim=-1)
            mask = targets != IGNORE_INDEX
            loss_sum += float(loss)
            correct += int((predictions[mask] == targets[mask]).sum())
            total += int(mask.sum())
    model.train()
    return loss_sum, correct, total


class SupervisedRun(Run[Example]):
    """Next-token loss on the trained tokens of chat or prompt/completion rows."""

    def load(self, path: Path) -> list[Example]:
        return load_dataset(path, self.tokenizer, self.config.max_seq_len)

    def evaluate(self) -> dict[str, float]:
        return evaluate(
            self.model, self.valid_set, self.config.batch_size, self.pad_id, self.device, sharded=self.sharded
        )

    def train_step(self, micro_batches: list[list[int]]) -> StepStats:
        """Run one optimizer step; return (loss per trained token, tokens, trained tokens), all ranks'."""
        batches = [collate([self.train_set[i] for i in indices], self.pad_id) for indices in micro_batches]
        trained = sum(trained_positions(b) for b in batches)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        # DDP averages gradients over ranks: scaling each rank's summed loss by world / (all ranks'
        # trained tokens) makes the step's gradient that of the mean loss per trained token over the
        # whole global batch, however the tokens fall between ranks. One rank: loss / its tokens.
        world = rank_and_world()[1]
        all_trained, all_tokens = sum_over_ranks(trained, tokens)
        scale = world / max(1.0, all_trained)
        loss_total = 0.0
        for k, batch in enumerate(batches):
            with self.syncing(k, len(batches)):
                loss, _, _ = _forward(self.model, batch, self.device)
                torch.autograd.backward(loss * scale if world > 1 else loss / max(1, trained))
            loss = loss.detach()
            loss_total += loss.item()
        self.optimizer_step()
        if world == 1:
            return StepStats(loss_total / max(1, trained), tokens, trained)
        (all_loss,) = sum_over_ranks(loss_total)
        return StepStats(all_loss / max(1.0, all_trained), int(all_tokens), int(all_trained))
