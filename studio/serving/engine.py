"""vLLM engine settings for a model server, and the zero adapter base requests fall back to on CPU.

Findings behind these settings (docs/research/vllm-cpu-serving.md):
- `VLLM_ENABLE_V1_MULTIPROCESSING=0` with the "uni" executor: without it vLLM's CPU platform turns
  "uni" into "mp" and adds a worker process (+0.9 GiB); the engine core still runs in its own process.
- Base requests run without an adapter (`lora_request=None`, the base model's own speed). vLLM's CPU
  LoRA kernels apply the last adapter slot to no-adapter rows of a mixed batch (index -1), so a base
  request batched with a fine-tune's would get that fine-tune (vLLM PRs #48421 / #49656): on CPU the
  engine's workers carry `lora_patch` (through the worker extension `lora_worker`), which fixes that.
  Where the patch does not fit the installed vLLM, base requests go through an all-zero adapter
  instead (correct, about 0.3x the speed). GPU kernels skip -1 rows: nothing to patch there.
- Adapters are registered (`add_lora`) before any request names them: a bad adapter path reaching
  `generate` kills the engine core, while `add_lora` only raises.
- Several workers (tensor / pipeline parallel): on GPUs, vLLM's Ray executor, whose workers take the GPU
  bundles of the replica's placement group (as Ray Serve LLM runs them; vLLM finds the group itself,
  since the engine core runs in the replica). On CPU, vLLM's Ray executor is not available (its CPU
  platform has no Ray device key): the multiprocessing executor, with OpenMP threads left unbound
  (`VLLM_CPU_OMP_THREADS_BIND=nobind`): its automatic binding wants a NUMA node per worker and refuses
  one-node machines. Tried on vLLM 0.32 CPU with the tiny model: tensor_parallel_size 2 inside a Ray
  actor answers greedy requests with the same text as one worker.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from studio.serving.spec import ServerSpec

# The engine's own name for the model; requests name the public model, which is an adapter's name.
ENGINE_MODEL_NAME = "__engine__"
CPU_KV_CACHE_BYTES = 64 << 20


# Unix socket paths are limited to 107 bytes; vLLM adds "/<uuid4>" (37) to its RPC folder.
MAX_SOCKET_DIR_CHARS = 107 - 37


def rpc_dir(scratch_dir: str) -> Path:
    """Return the folder of vLLM's sockets: under `scratch_dir` when the paths fit, else in /tmp."""
    inside = Path(scratch_dir) / "rpc"
    if len(str(inside)) <= MAX_SOCKET_DIR_CHARS:
        return inside
    return Path(tempfile.gettempdir()) / f"mini-studio-rpc-{os.getuid()}"


def engine_env(scratch_dir: str, *, cpu_workers: int = 1) -> dict[str, str]:
    """Return the environment of a model server replica (its engine core process inherits it).

    `cpu_workers` above 1: a CPU engine split over that many worker processes.
    """
    scratch = Path(scratch_dir)
    bind = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"} if cpu_workers > 1 else {}
    return bind | {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_RPC_BASE_PATH": str(rpc_dir(scratch_dir)),
        "VLLM_CACHE_ROOT": str(scratch / "cache"),
        "TMPDIR": str(scratch / "tmp"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def prepare_scratch(scratch_dir: str) -> None:
    """Create the scratch folders `engine_env` points at."""
    for folder in (rpc_dir(scratch_dir), Path(scratch_dir) / "cache", Path(scratch_dir) / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)


# vLLM imports this class in each engine worker process, which installs `lora_patch` there.
LORA_ROWS_EXTENSION = "studio.serving.lora_worker.LoraRowsFix"


def zero_adapter_reason(spec: ServerSpec) -> str | None:
    """Return why base requests of `spec` must run through the zero adapter, or None when they can run
    without one: no adapters, GPU kernels (correct for no-adapter rows), or `lora_patch` fits."""
    if not spec.adapters or spec.use_gpu:
        return None
    from studio.serving import lora_patch

    return lora_patch.check()


def engine_args(spec: ServerSpec, *, zero_adapter: bool = False) -> dict[str, Any]:
    """Return the keyword arguments of vLLM's `AsyncEngineArgs` for `spec`.

    `zero_adapter`: base requests go through an all-zero adapter registered under the model's name
    (the engine serves itself as `ENGINE_MODEL_NAME` and keeps a slot for it); else, on CPU with
    adapters, the engine's workers load the LoRA row fix.
    """
    zero_adapter = zero_adapter and spec.adapters
    args: dict[str, Any] = {
        "model": spec.model_source,
        "served_model_name": [ENGINE_MODEL_NAME if zero_adapter else spec.model_name],
        "dtype": spec.dtype,
        "disable_log_stats": True,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
    }
    if spec.quantization is not None:
        args["quantization"] = spec.quantization
    if spec.kv_cache_dtype != "auto":
        args["kv_cache_dtype"] = spec.kv_cache_dtype
    if spec.max_model_len is not None:
        args["max_model_len"] = spec.max_model_len
    if spec.adapters:
        slots = spec.max_adapters + (1 if zero_adapter else 0)  # + the zero adapter of base requests
        args |= {
            "enable_lora": True,
            "max_loras": slots,
            "max_cpu_loras": slots,
            "max_lora_rank": spec.max_lora_rank,
        }
        if not zero_adapter and not spec.use_gpu:
            args["worker_extension_cls"] = LORA_ROWS_EXTENSION
    if spec.use_gpu:
        args["gpu_memory_utilization"] = spec.gpu_memory_utilization
        if spec.workers > 1:
            args["distributed_executor_backend"] = "ray"
    else:
        args |= {
            "distributed_executor_backend": "uni" if spec.workers == 1 else "mp",
            "enforce_eager": True,
            "kv_cache_memory_bytes": spec.kv_cache_bytes or CPU_KV_CACHE_BYTES,
        }
    return args


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def check_model_dir(path: Path) -> None:
    """Refuse a model directory vLLM could only fail on later, with a vaguer message.

    Raises:
        ValueError: no `config.json`, or no weight files, in `path`.
    """
    if not (path / "config.json").is_file():
        raise ValueError(f"the model directory {path} has no config.json")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ValueError(f"the model directory {path} has no weights (*.safetensors, *.bin, *.pt or *.gguf)")


def write_zero_adapter(model_dir: str, out_dir: Path) -> Path:
    """Write a rank-1 LoRA adapter on `q_proj` with all-zero weights (the base model exactly); return it.

    Raises:
        ValueError: `model_dir` has no readable `config.json` (a hub id must be downloaded first).
    """
    import torch
    from safetensors.torch import save_file

    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"no config.json in {model_dir!r}: the model server needs a local model directory")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or hidden // heads)
    tensors = {}
    for layer in range(int(text["num_hidden_layers"])):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.lora_A.weight"] = torch.zeros(1, hidden)
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(heads * head_dim, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA", "r": 1, "lora_alpha": 1, "target_modules": ["q_proj"], "bias": "none",
        "task_type": "CAUSAL_LM", "base_model_name_or_path": model_dir,
    }  # fmt: skip
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config), encoding="utf-8")
    return out_dir


def adapter_rank(path: str) -> int:
    """Return the LoRA rank `r` an adapter directory declares.

    Raises:
        ValueError: the directory holds no readable `adapter_config.json`.
    """
    config_path = Path(path) / "adapter_config.json"
    try:
        return int(json.loads(config_path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"no LoRA adapter at {path!r}: {exc}") from exc
