"""Weights & Biases logging of a training run: every metrics event also goes to the job's W&B run.

`WandbReporter` wraps the run's `report` (which only rank 0 has), so only rank 0 logs. wandb is
imported when the first metrics event arrives: a run without W&B never imports it, and a cluster
without the package trains on (a warning on stderr says why nothing reached W&B) rather than failing a
job over its metrics sink. Step metrics and evaluations share the step axis (`step`); numbers only.
"""

from __future__ import annotations

import sys
from typing import Any

from studio.training.config import TrainConfig, WandbRun
from studio.training.run import Report

# Event fields that are not metrics.
NOT_LOGGED = frozenset({"type", "step"})
INIT_TIMEOUT_S = 120


def run_config(config: TrainConfig) -> dict[str, Any]:
    """Return what the W&B run records as its config: the run's hyperparameters, no paths."""
    keys = (
        "base_model", "method", "objective", "n_epochs", "batch_size", "gradient_accumulation_steps",
        "learning_rate", "lora_r", "lora_alpha", "lora_dropout", "max_seq_len", "seed", "warmup_ratio",
        "world_size", "sharding",
    )  # fmt: skip
    dumped = config.model_dump(mode="json")
    return {key: dumped[key] for key in keys if key in dumped}


class WandbReporter:
    """A `Report` that passes every event on and logs metrics events to W&B; `finish()` at the end."""

    def __init__(self, config: TrainConfig, report: Report) -> None:
        if config.wandb is None:
            raise ValueError("the run has no W&B settings")
        self._config = config
        self._wandb: WandbRun = config.wandb
        self._report = report
        self._run: Any = None
        self._failed = False

    def __call__(self, event: dict[str, Any]) -> None:
        self._report(event)
        if event.get("type") != "metrics" or self._failed:
            return
        run = self._run or self._start()
        if run is None:
            return
        values = {
            key: value
            for key, value in event.items()
            if key not in NOT_LOGGED and isinstance(value, int | float) and not isinstance(value, bool)
        }
        step = event.get("step")
        run.log(values, step=step if isinstance(step, int) else None)

    def _start(self) -> Any:
        settings = self._wandb
        try:
            import wandb
        except ImportError:
            self._failed = True
            print("warning: W&B logging asked for, but wandb is not installed here", file=sys.stderr)
            return None
        settings.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._run = self._init(wandb)
        except Exception as exc:  # a bad key or an unreachable server: the training goes on
            self._failed = True
            print(f"warning: W&B run could not start, metrics are not logged to W&B: {exc}", file=sys.stderr)
            return None
        return self._run

    def _init(self, wandb: Any) -> Any:
        settings = self._wandb
        return wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name or settings.run_id,
            tags=list(settings.tags) or None,
            id=settings.run_id,
            resume="allow",
            dir=str(settings.directory),
            mode=settings.mode,
            config=run_config(self._config),
            settings=wandb.Settings(console="off", init_timeout=INIT_TIMEOUT_S, quiet=True),
        )

    def finish(self) -> None:
        """Close the W&B run (flushes an offline run's files); nothing when none was started."""
        if self._run is not None:
            self._run.finish()
            self._run = None
