"""Token counts with a base model's own tokenizer, for dataset statistics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from studio.training.models import resolve_base_model


def token_counter(model: str, models_dir: Path | None) -> Callable[[str], int]:
    """Return a function counting the tokens of a text (no special tokens) with `model`'s tokenizer.

    Raises:
        ValueError: the model is unknown. OSError: its files cannot be fetched.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(model, models_dir))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    return count
