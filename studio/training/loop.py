"""The supervised fine-tuning loop: LoRA or full, plain torch, resumable from its own checkpoints.

`train` is a plain function so that a Ray Train worker (or anything else) can call it; when a
`torch.distributed` process group is already initialized the model is wrapped in DDP and each rank
trains on its shard of the data. Only rank 0 reports, writes checkpoints and the final artifact.
Across ranks, every step normalises the loss by the trained tokens of all ranks, reports totals of
all ranks, and takes the stop decision together (one rank seeing `should_stop` stops them all at the
same step), so that no rank is left waiting in a collective the others skipped.

Layout under `output_dir`:
- `checkpoints/step-<N>/`: adapter (LoRA) or full model, `optimizer.pt`, `scheduler.pt`,
  `rng_state.pt` and `trainer_state.json`; each written in a temporary directory and renamed into place.
- `final/`: the adapter or full model, plus the tokenizer.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from studio.training.config import (
    STATE_FILE,
    TrainConfig,
    TrainResult,
    atomic_dir,
    latest_checkpoint,
    remove_leftovers,
)
from studio.training.data import IGNORE_INDEX, Example, collate, epoch_steps, load_dataset, steps_per_epoch

Report = Callable[[dict[str, Any]], None]
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
)  # fmt: skip


def disable_progress_bars() -> None:
    """Turn off the progress bars of transformers and the model hub: they would flood a job's log."""
    from huggingface_hub.utils.tqdm import disable_progress_bars as disable_hub_bars
    from transformers.utils import logging as hf_logging

    disable_hub_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def resolve_device(name: str) -> torch.device:
    """Return the device for `name`; "auto" is the current CUDA device when there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _from_pretrained_dtype(dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    # `torch_dtype` was renamed `dtype` in transformers 4.56; the old name warns in 5.x.
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _load_model(config: TrainConfig, device: torch.device, resume: Path | None) -> nn.Module:
    """Return the trainable model on `device`: LoRA-wrapped base, or the full model."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    if config.method == "full":
        # fp32 master weights; on CUDA the forward runs under bf16 autocast.
        source = resume or config.base_model
        model: Any = AutoModelForCausalLM.from_pretrained(source, **_from_pretrained_dtype(torch.float32))
    else:
        # The frozen base can live in bf16 on a GPU; peft keeps the adapter weights in fp32.
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        base = AutoModelForCausalLM.from_pretrained(config.base_model, **_from_pretrained_dtype(dtype))
        if resume is not None:
            model = PeftModel.from_pretrained(base, str(resume), is_trainable=True)
        else:
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(base, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable: nn.Module = model.to(device)
    return trainable


def _unwrap(model: nn.Module) -> Any:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _forward(
    model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (summed loss over the trained positions, targets, logits), position i predicting i+1.

    `targets[:, i]` is the label of token i+1 (-100 past the end); `logits` are all positions'.
    """
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    with _autocast(device):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Position i predicts token i+1: shifting the labels left (not slicing the logits) keeps the
    # logits contiguous, so the loss reads them in place instead of copying them. Summing (not
    # averaging) lets a step normalise by all the trained tokens of its micro-batches, so gradient
    # accumulation weighs every token the same.
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX).to(device)
    flat = logits.float().reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, targets, logits


def _trained(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate(
    model: nn.Module, examples: list[Example], batch_size: int, pad_id: int, device: torch.device
) -> dict[str, float]:
    """Return `valid_loss` (mean per trained token) and `valid_mean_token_accuracy` on `examples`.

    In a distributed run every rank calls it with the whole validation set: each evaluates its share
    (every world_size-th example) on its own copy of the model and the sums are added over ranks.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    loss_sum, correct, total = _sum_over_ranks(
        *_evaluation_sums(_unwrap(model), examples[rank::world], batch_size, pad_id, device)
    )
    return {"valid_loss": loss_sum / max(1, total), "valid_mean_token_accuracy": correct / max(1, total)}


def _evaluation_sums(
    model: nn.Module, examples: list[Example], batch_size: int, pad_id: int, device: torch.device
) -> tuple[float, int, int]:
    """Return (summed loss, correct predictions, trained positions) of `model` on `examples`."""
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad_id)
            loss, targets, logits = _forward(model, batch, device)
            predictions = logits.argmax(dim=-1)
            mask = targets != IGNORE_INDEX
            loss_sum += float(loss)
            correct += int((predictions[mask] == targets[mask]).sum())
            total += int(mask.sum())
    model.train()
    return loss_sum, correct, total


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_over_ranks(*values: float) -> list[float]:
    """Return each value summed over all ranks (the values themselves when not distributed)."""
    if not _distributed():
        return list(values)
    # float64: token counts stay exact far beyond any dataset size.
    totals = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == dist.Backend.NCCL:
        totals = totals.cuda()
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return [float(v) for v in totals.cpu().tolist()]


class _Run:
    """The mutable state of one `train` call: model, optimizer, counters."""

    def __init__(self, config: TrainConfig, report: Report | None) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.base_model = Path(config.base_model)
        if not self.base_model.is_dir():
            raise ValueError(
                f"base_model {config.base_model!r} is not a local model directory "
                "(resolve a model name first: studio.training.models.resolve_base_model)"
            )
        self.is_main = config.rank == 0
        self._report = report
        self.device = resolve_device(config.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.base_model)
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.train_set = load_dataset(config.training_file, self.tokenizer, config.max_seq_len)
        self.valid_set = (
            load_dataset(config.validation_file, self.tokenizer, config.max_seq_len)
            if config.validation_file
            else []
        )
        self.per_epoch = steps_per_epoch(
            len(self.train_set), config.batch_size, config.gradient_accumulation_steps, config.world_size
        )
        self.total_steps = self.per_epoch * config.n_epochs
        self.checkpoints = config.output_dir / "checkpoints"
        self.step = 0
        self.trained_tokens = 0
        self.last_loss: float | None = None
        self.last_checkpoint: Path | None = None
        self.checkpoint_step = -1

    def emit(self, event: dict[str, Any]) -> None:
        if self.is_main and self._report is not None:
            self._report(event)

    def setup(self) -> None:
        """Build the model, optimizer and schedule, restoring them from the latest checkpoint if any."""
        config = self.config
        torch.manual_seed(config.seed + config.rank)
        if self.is_main:
            remove_leftovers(config.output_dir, self.checkpoints)
        resume = latest_checkpoint(self.checkpoints)
        model = _load_model(config, self.device, resume)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _linear_schedule(warmup, self.total_steps)
        )
        if resume is not None:
            self._restore(resume)
        if _distributed():
            if self.device.type == "cuda" and self.device.index is not None:
                torch.cuda.set_device(self.device)  # NCCL collectives (`_sum_over_ranks`) use it
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.model = model

    def _restore(self, checkpoint: Path) -> None:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        if state["total_steps"] != self.total_steps or state["method"] != self.config.method:
            theirs = f"{state['method']}, {state['total_steps']} steps"
            ours = f"{self.config.method}, {self.total_steps} steps"
            raise RuntimeError(f"checkpoint {checkpoint} is of another run ({theirs}), not this one ({ours})")
        device = self.device
        self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", device, weights_only=True))
        rng = torch.load(checkpoint / "rng_state.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = self.checkpoint_step = int(state["step"])
        self.trained_tokens = int(state["trained_tokens"])
        self.last_loss = state["train_loss"]
        self.last_checkpoint = checkpoint

    def save_checkpoint(self) -> None:
        """Write `checkpoints/step-<step>` atomically (rank 0) and report it."""
        if self.checkpoint_step == self.step:
            return
        self.checkpoint_step = self.step
        if self.is_main:

            def write(tmp: Path) -> None:
                _unwrap(self.model).save_pretrained(str(tmp))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                rng = {"cpu": torch.get_rng_state()}
                if self.device.type == "cuda":
                    rng["cuda"] = torch.cuda.get_rng_state(self.device)
                torch.save(rng, tmp / "rng_state.pt")
                state = {
                    "step": self.step,
                    "epoch": self.step / self.per_epoch,
                    "total_steps": self.total_steps,
                    "trained_tokens": self.trained_tokens,
                    "train_loss": self.last_loss,
                    "method": self.config.method,
                    "seed": self.config.seed,
                    "world_size": self.config.world_size,
                }
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

            path = atomic_dir(self.checkpoints / f"step-{self.step}", write)
            self.last_checkpoint = path
            self.emit({"type": "checkpoint", "step": self.step, "path": str(path)})
        _barrier()

    def _ddp(self) -> nn.parallel.DistributedDataParallel:
        assert isinstance(self.model, nn.parallel.DistributedDataParallel)
        return self.model

    def train_step(self, micro_batches: list[list[int]]) -> tuple[float, int, int]:
        """Run one optimizer step; return (loss per trained token, tokens, trained tokens), all ranks'."""
        batches = [collate([self.train_set[i] for i in indices], self.pad_id) for indices in micro_batches]
        trained = sum(_trained(b) for b in batches)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        # DDP averages gradients over ranks: scaling each rank's summed loss by world / (all ranks'
        # trained tokens) makes the step's gradient that of the mean loss per trained token over the
        # whole global batch, however the tokens fall between ranks. One rank: loss / its tokens.
        world = dist.get_world_size() if _distributed() else 1
        all_trained, all_tokens = _sum_over_ranks(trained, tokens)
        scale = world / max(1.0, all_trained)
        loss_total = 0.0
        for k, batch in enumerate(batches):
            syncing = k == len(batches) - 1 or not isinstance(self.model, nn.parallel.DistributedDataParallel)
            with nullcontext() if syncing else self._ddp().no_sync():
                loss, _, _ = _forward(self.model, batch, self.device)
                torch.autograd.backward(loss * scale if world > 1 else loss / max(1, trained))
            loss = loss.detach()
            loss_total += loss.item()
        if self.config.max_grad_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if world == 1:
            return loss_total / max(1, trained), tokens, trained
        (all_loss,) = _sum_over_ranks(loss_total)
        return all_loss / max(1.0, all_trained), int(all_tokens), int(all_trained)

    def save_final(self) -> Path:
        """Write `final/` (adapter or full model in the base's dtype, plus tokenizer) on rank 0."""
        path = self.config.output_dir / "final"
        if self.is_main:
            model = _unwrap(self.model)
            if self.config.method == "full":
                model.to(_base_dtype(self.base_model))

            def write(tmp: Path) -> None:
                model.save_pretrained(str(tmp))
                _copy_tokenizer(self.base_model, tmp, self.tokenizer)

            atomic_dir(path, write)
        _barrier()
        return path


def _copy_tokenizer(base_model: Path, dest: Path, tokenizer: Any) -> None:
    """Copy the base model's tokenizer files as they are, else save the loaded tokenizer."""
    # Verbatim copies keep the layout the base was published with (template in tokenizer_config.json,
    # special_tokens_map.json), which the installed transformers might otherwise rewrite.
    copied = [name for name in TOKENIZER_FILES if (base_model / name).is_file()]
    for name in copied:
        shutil.copy2(base_model / name, dest / name)
    if not copied:
        tokenizer.save_pretrained(str(dest))


def _base_dtype(base_model: Path) -> torch.dtype:
    config = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _any_rank(flag: bool) -> bool:
    """Return True when `flag` is True on at least one rank (every rank must call this together)."""
    if not _distributed():
        return flag
    (count,) = _sum_over_ranks(1.0 if flag else 0.0)
    return count > 0


def _epoch(run: _Run, epoch: int) -> list[list[list[int]]]:
    c = run.config
    n = len(run.train_set)
    return epoch_steps(n, c.batch_size, c.gradient_accumulation_steps, c.world_size, c.rank, c.seed, epoch)


def _batches(run: _Run) -> Iterator[tuple[int, list[list[int]]]]:
    """Yield (epoch, micro-batches) for every step after the one the run resumed from."""
    start = run.step
    for epoch in range(start // run.per_epoch, run.config.n_epochs):
        for k, micro_batches in enumerate(_epoch(run, epoch)):
            if epoch * run.per_epoch + k >= start:
                yield epoch, micro_batches


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def train(
    config: TrainConfig,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on `config.training_file`; return what was trained and where.

    Resumes from the latest checkpoint under `output_dir/checkpoints` when there is one. `report`
    receives one metrics event per step, one per evaluation and one per checkpoint (rank 0 only).
    `should_stop` is polled between steps, on every rank: when it returns True on any rank, every
    rank stops before the same step, a checkpoint is written and the result has `stopped=True` and
    no final artifact. Metrics and `trained_tokens` count the tokens of all ranks.

    Raises:
        ValueError: the dataset is unusable (no example, nothing to train on), a value is invalid,
            or `base_model` is not a local directory.
        RuntimeError: the checkpoint to resume from belongs to a different run.
    """
    run = _Run(config, report)
    run.setup()
    evaluated_at = -1
    # Seconds spent in and tokens seen by this call's training steps, for throughput and ETA. The first
    # step (CUDA kernels chosen and compiled, allocator warming up: 30% of a short GPU run's time) is
    # left out once there are others.
    busy = first_busy = 0.0
    tokens_seen = first_tokens = 0
    first_step = run.step
    for _epoch, micro_batches in _batches(run):
        if should_stop is not None and _any_rank(should_stop()):
            if run.step > first_step:
                run.save_checkpoint()
            return TrainResult(None, run.step, run.trained_tokens, run.last_loss, True, run.last_checkpoint)
        lr = float(run.scheduler.get_last_lr()[0])
        t0 = time.monotonic()
        loss, tokens, trained = run.train_step(micro_batches)
        run.step += 1
        run.last_loss = loss
        run.trained_tokens += trained
        done = run.step - first_step
        if done == 1:
            first_busy, first_tokens = time.monotonic() - t0, tokens
        else:
            busy += time.monotonic() - t0
            tokens_seen += tokens
        step_time = busy / (done - 1) if done > 1 else first_busy
        run.emit({
            "type": "metrics",
            "step": run.step,
            "total_steps": run.total_steps,
            "epoch": round(run.step / run.per_epoch, 4),
            "train_loss": loss,
            "learning_rate": lr,
            "tokens_per_second": _rate(tokens_seen, busy) if done > 1 else _rate(first_tokens, first_busy),
            "trained_tokens": run.trained_tokens,
            "eta_seconds": (run.total_steps - run.step) * step_time,
        })  # fmt: skip
        if run.valid_set and config.eval_every_steps and run.step % config.eval_every_steps == 0:
            metrics = evaluate(run.model, run.valid_set, config.batch_size, run.pad_id, run.device)
            run.emit({"type": "metrics", "step": run.step, **metrics})
            evaluated_at = run.step
        if config.checkpoint_every_steps and run.step % config.checkpoint_every_steps == 0:
            run.save_checkpoint()
    if run.valid_set and evaluated_at != run.step:
        metrics = evaluate(run.model, run.valid_set, config.batch_size, run.pad_id, run.device)
        run.emit({"type": "metrics", "step": run.step, **metrics})
    final = run.save_final()
    return TrainResult(final, run.step, run.trained_tokens, run.last_loss, False, run.last_checkpoint)
