"""Merge a LoRA adapter into its base: full safetensors a user can load without peft (vLLM, transformers).

`merge_adapter` runs where torch is (a Ray task started by `studio.backends.model_files`); it writes
the merged model and the adapter's tokenizer into a temporary directory beside `output_dir` and renames
it into place, so a reader sees a complete directory or none. An `output_dir` that exists is kept: two
merges of one adapter at once both finish, and the first to rename wins.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from studio.training.models import resolve_base_model


def merge_adapter(*, base_model: str, adapter_dir: Path, output_dir: Path, models_dir: Path | None) -> Path:
    """Write base + adapter merged (the base's dtype, safetensors, with the tokenizer) to `output_dir`.

    Returns `output_dir`, at once when it already exists.

    Raises:
        ValueError: `adapter_dir` holds no adapter, or the base model cannot be resolved.
        OSError: the disk failed, or the base model could not be downloaded.
    """
    if (output_dir / "config.json").is_file():
        return output_dir
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no LoRA adapter (no adapter_config.json)")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = resolve_base_model(base_model, models_dir)
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "float32"), None)
    base = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".tmp-{output_dir.name}-{uuid.uuid4().hex}"
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        # The tokenizer the fine-tune saved beside its adapter (the base's, copied verbatim).
        for item in adapter_dir.iterdir():
            kept = item.is_file() and not item.name.startswith("adapter_") and item.name != "README.md"
            if kept and not (tmp / item.name).exists():
                shutil.copy2(item, tmp / item.name)
        try:
            os.rename(tmp, output_dir)
        except OSError:
            if not (output_dir / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir
