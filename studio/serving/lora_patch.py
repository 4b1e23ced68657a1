"""vLLM's CPU LoRA kernels made to leave rows without an adapter alone, so base requests need none.

The bug (vLLM 0.32, CPU only; upstream PRs #48421 / #49656 open): vLLM marks a batch row without an
adapter with LoRA slot index -1, and the CPU wrapper (`PunicaWrapperCPU`, torch ops) gathers the slot
weights with that index, which in torch selects the *last* slot. A base-model request batched with
fine-tunes thus gets the fine-tune in the last slot added to its activations: one tenant's adapter
leaks into another tenant's answers. vLLM's GPU (Triton) kernels skip -1 rows and are correct.

The fix, per engine step (`update_metadata`, once per step, not per layer):
- no row has an adapter: every LoRA layer returns at once (the base model's own cost, which is what
  makes base traffic fast: with a zero adapter every row took the per-token gather path);
- every row has one: vLLM's code as it is;
- a mix: vLLM's shrink runs, then the shrink buffer's rows without an adapter are zeroed before the
  expand adds `buffer @ B`, so those rows get exactly zero added (likewise for the logits and
  embedding LoRA).

The patch replaces methods of vLLM classes, so it is applied only to the exact code it was written
for: `check()` compares the vLLM version and a hash of the sources it relies on, and `install()`
refuses (returns False) on any difference; the model server then falls back to the all-zero adapter
(`engine.write_zero_adapter`). It runs in the engine's worker processes through a vLLM worker
extension (`studio.serving.lora_worker`); remove it once upstream merges a fix.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

SUPPORTED_VLLM = "0.32.0"
# sha256 (first 16 hex digits) of the sources the patch was written against (vLLM 0.32.0 CPU wheel).
EXPECTED_SOURCES = {
    "vllm.lora.punica_wrapper.punica_cpu": "d2ca28b31743f59a",
    "vllm.lora.ops.torch_ops.lora_ops": "33bc2aca729ebc37",
    "PunicaWrapperBase.update_metadata": "d495e482e77f030a",
    "PunicaWrapperBase.token_lora_indices": "3f9867f42f47684d",
    "PunicaWrapperBase.sampler_indices": "f486b59b6a623812",
}
# Marks the per-step state "no row of this step has an adapter".
NO_ADAPTER = "no-adapter"
_originals: dict[str, Any] = {}


def source_hashes() -> dict[str, str]:
    """Return the hashes of the installed vLLM sources the patch relies on (keys of `EXPECTED_SOURCES`)."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase

    base = PunicaWrapperBase
    sources = {
        "vllm.lora.punica_wrapper.punica_cpu": inspect.getsource(punica_cpu),
        "vllm.lora.ops.torch_ops.lora_ops": inspect.getsource(lora_ops),
        "PunicaWrapperBase.update_metadata": inspect.getsource(base.update_metadata),
        "PunicaWrapperBase.token_lora_indices": inspect.getsource(base.token_lora_indices.fget),  # type: ignore[attr-defined]
        "PunicaWrapperBase.sampler_indices": inspect.getsource(base.sampler_indices.fget),  # type: ignore[attr-defined]
    }
    return {name: hashlib.sha256(text.encode()).hexdigest()[:16] for name, text in sources.items()}


def check() -> str | None:
    """Return why the patch does not fit the installed vLLM, or None when it does."""
    try:
        import vllm

        if vllm.__version__ != SUPPORTED_VLLM:
            return f"vLLM {vllm.__version__} is not the {SUPPORTED_VLLM} the LoRA row fix was written for"
        found = source_hashes()
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return f"vLLM's CPU LoRA code could not be read: {exc}"
    changed = sorted(name for name, digest in EXPECTED_SOURCES.items() if found.get(name) != digest)
    if changed:
        return f"vLLM's CPU LoRA code differs from what the row fix was written for: {', '.join(changed)}"
    return None


def active() -> bool:
    """Return whether the patch is installed in this process."""
    return bool(_originals)


def install() -> bool:
    """Install the patch in this process unless it is there already; return whether it is active.

    Returns False, changing nothing, when `check()` finds a difference.
    """
    if _originals:
        return True
    if check() is not None:
        return False
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    for name, replacement in (
        ("update_metadata", _update_metadata),
        ("add_lora_linear", _add_lora_linear),
        ("add_lora_logits", _add_lora_logits),
        ("add_lora_embedding", _add_lora_embedding),
    ):
        # The original as the class resolves it (update_metadata is inherited from the base class).
        _originals[name] = getattr(PunicaWrapperCPU, name)
        setattr(PunicaWrapperCPU, name, replacement)
    return True


def uninstall() -> None:
    """Restore vLLM's own methods (tests compare both)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    for name, original in _originals.items():
        if name == "update_metadata":
            delattr(PunicaWrapperCPU, name)  # inherited again from PunicaWrapperBase
        else:
            setattr(PunicaWrapperCPU, name, original)
    _originals.clear()


def rows_without_adapter(indices: Any) -> Any:
    """Return the step's state for one index tensor: None when every row has an adapter (nothing to
    mask), `NO_ADAPTER` when none has, else the boolean mask of the rows without one (index -1)."""
    missing = indices < 0
    count = int(missing.sum())
    if count == 0:
        return None
    if count == missing.numel():
        return NO_ADAPTER
    return missing


def _update_metadata(self: Any, mapping: Any, *args: Any, **kwargs: Any) -> None:
    _originals["update_metadata"](self, mapping, *args, **kwargs)
    self._ms_token_rows = rows_without_adapter(self.token_lora_indices)
    self._ms_sampler_rows = rows_without_adapter(self.sampler_indices)


def _zero_rows(tensor: Any, missing: Any) -> None:
    tensor[: missing.numel()][missing] = 0


def _add_lora_linear(
    self: Any,
    y: Any,
    x: Any,
    lora_a_stacked: tuple[Any, ...],
    lora_b_stacked: tuple[Any, ...],
    scale: float,
    output_slices: tuple[int, ...],
    *,
    buffer: tuple[Any, ...] | None = None,
    **kwargs: Any,
) -> None:
    import torch

    missing = getattr(self, "_ms_token_rows", None)
    if missing is None:  # every row has an adapter (or no step metadata yet): vLLM as it is
        return _originals["add_lora_linear"](  # type: ignore[no-any-return]
            self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
        )
    if isinstance(missing, str):  # NO_ADAPTER: the base model alone
        return None
    # As vLLM's add_lora_linear, with the adapter-less rows of the shrink result zeroed.
    if buffer is None:
        rank = lora_b_stacked[0].size(-1)
        buffer = tuple(
            torch.zeros((x.size(0), rank), dtype=torch.float32, device=x.device) for _ in output_slices
        )
    self.add_shrink(buffer, x, lora_a_stacked, scale, **kwargs)
    for part in buffer:
        _zero_rows(part.view(-1, part.shape[-1]), missing)
    self.add_expand(y, buffer, lora_b_stacked, output_slices, add_inputs=True, **kwargs)
    return None


def _add_lora_logits(
    self: Any,
    y: Any,
    x: Any,
    lora_a_stacked: Any,
    lora_b_stacked: Any,
    scale: float,
    *,
    buffer: Any = None,
    **kwargs: Any,
) -> None:
    import torch
    from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_shrink

    missing = getattr(self, "_ms_sampler_rows", None)
    if missing is None:
        return _originals["add_lora_logits"](  # type: ignore[no-any-return]
            self, y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs
        )
    if isinstance(missing, str):
        return None
    y = y.view(-1, y.shape[-1])
    x = x.view(-1, x.shape[-1])
    if buffer is None:
        buffer = torch.zeros((x.size(0), lora_b_stacked.size(-1)), dtype=torch.float32, device=x.device)
    bgmv_shrink(x, lora_a_stacked, buffer, self.sampler_indices, scale)
    _zero_rows(buffer, missing)
    bgmv_expand(buffer, lora_b_stacked, y, self.sampler_indices, add_inputs=True)
    return None


def _add_lora_embedding(
    self: Any, y: Any, x: Any, lora_b_stacked: Any, add_inputs: bool = True, **kwargs: Any
) -> None:
    missing = getattr(self, "_ms_token_rows", None)
    if isinstance(missing, str):
        return None
    if missing is not None:  # the rows without an adapter looked up some slot's embedding A: drop it
        x = x.clone()
        _zero_rows(x, missing)
    return _originals["add_lora_embedding"](self, y, x, lora_b_stacked, add_inputs, **kwargs)  # type: ignore[no-any-return]
