"""Training core of Mini Studio: the code that runs inside a training job.

It imports no service or store code, and no Ray code outside `ray_train` (loaded only for Ray Train
runs), so it runs with plain torch anywhere: `python -m studio.training --config job.json` in a Ray
job, or `train(config)` called by a Ray Train worker. Heavy modules (torch, transformers, peft) load
on first use of `train` or `ensure_tiny_model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from studio.training.config import TrainConfig, TrainResult
from studio.training.tiny_model import TINY_MODEL_NAME, ensure_tiny_model

if TYPE_CHECKING:
    from studio.training.loop import train

__all__ = ["TINY_MODEL_NAME", "TrainConfig", "TrainResult", "ensure_tiny_model", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from studio.training.loop import train

        return train
    raise AttributeError(name)
