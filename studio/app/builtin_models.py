"""Base models every Mini Studio has, whatever the admin registers."""

from __future__ import annotations

from studio.domain.estimate import shape_from_config
from studio.domain.ids import unix_now
from studio.schemas.base_models import BaseModelEntry
from studio.training.tiny_model import TINY_MODEL_NAME, TINY_SIZES, VOCAB_SIZE

# The shape of the model `studio.training.tiny_model` builds on first use (a 2-layer Llama).
TINY_CONFIG = {**TINY_SIZES, "tie_word_embeddings": True, "vocab_size": VOCAB_SIZE}


def builtin_models() -> list[BaseModelEntry]:
    """Return the registry entries of the built-in models (sources resolved on the cluster)."""
    return [
        BaseModelEntry(
            id=TINY_MODEL_NAME,
            source=TINY_MODEL_NAME,
            shape=shape_from_config(TINY_CONFIG),
            chat_template=True,
            description="A 2-layer Llama with random weights, made locally on first use (tests and demos).",
            builtin=True,
            created_at=unix_now(),
        )
    ]
