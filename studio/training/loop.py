"""The fine-tuning loop: LoRA or full, plain torch, resumable from its own checkpoints.

`Run` holds what every objective shares (model, optimizer, schedule, checkpoints, counters);
`SupervisedRun` trains the next-token loss on chat and prompt/completion rows, and
`studio.training.dpo.DpoRun` trains DPO on preference rows (`TrainConfig.objective`).

`train` is a plain function so that a Ray Train worker (or anything else) can call it; when a
`torch.distributed` process group is already initialized the model is wrapped in DDP and each rank
trains on its shard of the data. Only rank 0 reports, writes checkpoints and the final artifact.
Across ranks, every step normalises the loss by the trained tokens of all ranks, reports totals of
all ranks, and takes the stop decision together (one rank seeing `should_stop` stops them all at the
same step), so that no rank is left waiting in a collective the others skipped.

Layout under `output_dir`:
- `checkpoints/step-<N>/`: adapter (LoRA) or full model, `optimizer.pt`, `scheduler.pt`,
  `rng_state.pt`, `trainer_state.json` and what the objective adds (DPO of a full model: the reference
  log-probs); each written in a temporary directory and renamed into place.
- `final/`: the adapter or full model, plus the tokenizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from studio.training.config import TrainConfig, TrainResult
from studio.training.data import epoch_steps
from studio.training.ranks import any_rank
from studio.training.run import Report, Run
from studio.training.supervised import SupervisedRun

__all__ = ["Report", "disable_progress_bars", "new_run", "train"]


def disable_progress_bars() -> None:
    """Turn off the progress bars of transformers and the model hub: they would flood a job's log."""
    from huggingface_hub.utils.tqdm import disable_progress_bars as disable_hub_bars
    from transformers.utils import logging as hf_logging

    disable_hub_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _epoch(run: Run[Any], epoch: int) -> list[list[list[int]]]:
    c = run.config
    n = len(run.train_set)
    return epoch_steps(n, c.batch_size, c.gradient_accumulation_steps, c.world_size, c.rank, c.seed, epoch)


def _batches(run: Run[Any]) -> Iterator[tuple[int, list[list[int]]]]:
    """Yield (epoch, micro-batches) for every step after the one the run resumed from."""
    start = run.step
    for epoch in range(start // run.per_epoch, run.config.n_epochs):
        for k, micro_batches in enumerate(_epoch(run, epoch)):
            if epoch * run.per_epoch + k >= start:
                yield epoch, micro_batches


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def new_run(config: TrainConfig, report: Report | None) -> Run[Any]:
    """Return the run of `config.objective` (not set up yet)."""
    if config.objective == "dpo":
        # Imported here: `dpo` builds on this module's `Run`.
        from studio.training.dpo import DpoRun

        return DpoRun(config, report)
    return SupervisedRun(config, report)


def train(
    config: TrainConfig,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on `config.training_file`; return what was trained and where.

    Resumes from the latest checkpoint under `output_dir/checkpoints` when there is one. `report`
    receives one metrics event per step, one per evaluation and one per checkpoint (rank 0 only);
    with `config.wandb` its metrics also go to that W&B run (`studio.training.wandb_log`).
    `should_stop` is polled between steps, on every rank: when it returns True on any rank, every
    rank stops before the same step, a checkpoint is written and the result has `stopped=True` and
    no final artifact. Metrics and `trained_tokens` count the tokens of all ranks.

    With `objective` "dpo" a step's event also has `rewards/chosen`, `rewards/rejected`,
    `rewards/margins` and `rewards/accuracies` (see `studio.training.dpo`), `train_loss` being the DPO
    loss.

    Raises:
        ValueError: the dataset is unusable (no example, nothing to train on, rows of the wrong kind
            for the objective), a value is invalid, or `base_model` is not a local directory.
        RuntimeError: the checkpoint to resume from belongs to a different run.
    """
    if config.wandb is None or report is None:
        return _train(config, report=report, should_stop=should_stop)
    from studio.training.wandb_log import WandbReporter

    reporter = WandbReporter(config, report)
    try:
        return _train(config, report=reporter, should_stop=should_stop)
    finally:
        reporter.finish()


def _train(
    config: TrainConfig,
    *,
    report: Report | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    """`train` without its W&B wrapping."""
    run = new_run(config, report)
    run.setup()
    evaluated_at = -1
    # Seconds spent in and tokens seen by this call's training steps, for throughput and ETA. The first
    # step (CUDA kernels chosen and compiled, allocator warming up: 30% of a short GPU run's time) is
    # left out once there are others.
    busy = first_busy = 0.0
    tokens_seen = first_tokens = 0
    first_step = run.step
    for _epoch, micro_batches in _batches(run):
        if should_stop is not None and any_rank(should_stop()):
            if run.step > first_step:
                run.save_checkpoint()
            return TrainResult(None, run.step, run.trained_tokens, run.last_loss, True, run.last_checkpoint)
        lr = float(run.scheduler.get_last_lr()[0])
        t0 = time.monotonic()
        stats = run.train_step(micro_batches)
        run.step += 1
        run.last_loss = stats.loss
        run.trained_tokens += stats.trained
        done = run.step - first_step
        if done == 1:
            first_busy, first_tokens = time.monotonic() - t0, stats.tokens
        else:
            busy += time.monotonic() - t0
            tokens_seen += stats.tokens
        step_time = busy / (done - 1) if done > 1 else first_busy
        run.emit({
            "type": "metrics",
            "step": run.step,
            "total_steps": run.total_steps,
            "epoch": round(run.step / run.per_epoch, 4),
            "train_loss": stats.loss,
            **stats.metrics,
            "learning_rate": lr,
            "tokens_per_second": _rate(tokens_seen, busy) if done > 1 else _rate(first_tokens, first_busy),
            "trained_tokens": run.trained_tokens,
            "eta_seconds": (run.total_steps - run.step) * step_time,
        })  # fmt: skip
        if run.valid_set and config.eval_every_steps and run.step % config.eval_every_steps == 0:
            run.emit({"type": "metrics", "step": run.step, **run.evaluate()})
            evaluated_at = run.step
        if config.checkpoint_every_steps and run.step % config.checkpoint_every_steps == 0:
            run.save_checkpoint()
    if run.valid_set and evaluated_at != run.step:
        run.emit({"type": "metrics", "step": run.step, **run.evaluate()})
    final = run.save_final()
    return TrainResult(final, run.step, run.trained_tokens, run.last_loss, False, run.last_checkpoint)
