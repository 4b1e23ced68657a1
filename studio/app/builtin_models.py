"""Base models every Mini Studio has, whatever the admin registers."""

from __future__ import annotations

from studio.domain.estimate import shape_from_config
from studio.domain.ids import unix_now
from studio.schemas.base_models import BaseModelEntry
from studio.training.tiny_model import TINY_MODEL_NAME, TINY_SIZES, VOCAB_SIZE

# The shape of the model `studio.training.tiny_model` builds (and pretrains) on first use (a 2-layer Llama).
TINY_CONFIG = {**TINY_SIZES, "tie_word_embeddings": True, "vocab_size": VOCAB_SIZE}


def builtin_models() -> list[BaseModelEntry]:
    """Return the registry entries of the built-in models (sources resolved on the cluster)."""
    return [
        BaseModelEntry(
            id=TINY_MODEL_NAME,
            source=TINY_MODEL_NAME,
            shape=shape_from_config(TINY_CONFIG),
            chat_template=True,
            description=(
                "A 2-layer Llama made locally on first use and pretrained for seconds on a small built-in "
                "corpus: it answers simple questions in short sentences (tests and demos)."
            ),
            builtin=True,
            created_at=unix_now(),
        )
    ]
