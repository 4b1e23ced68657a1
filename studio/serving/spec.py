"""What a model server runs: the model, its engine settings, and where it may write scratch files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ModelStore:
    """Where a replica fetches `s3://` model folders from (credentials: the replica's environment), and
    the most bytes of them its node's cache keeps (`studio.serving.model_cache`)."""

    endpoint_url: str | None
    region: str | None
    timeout_s: float
    cache_max_bytes: int


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One model server's configuration (every replica gets the same).

    `model_name` is the public name requests carry (a base model or a full fine-tune's `ft:` name);
    `model_source` a local directory or a hub id. With `adapters` set (base models) the engine takes
    LoRA adapters at runtime; base requests run without one (on CPU with vLLM's LoRA kernels patched,
    else through an all-zero adapter: see `engine.py`).

    `model_uri`: the S3 copy of `model_source` (a full fine-tune's final model), loaded through the node's
    cache when `model_source` is not on the replica's node; `store` says where S3 is (None: no S3).
    """

    model_name: str
    model_source: str
    adapters: bool
    scratch_dir: str
    # Where a base model name (`mini-studio/tiny-llama`, a hub id) is made or downloaded.
    models_dir: str | None = None
    use_gpu: bool = False
    max_model_len: int | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    gpu_memory_utilization: float = 0.9
    kv_cache_bytes: int | None = None
    max_lora_rank: int = 16
    max_adapters: int = 4
    # One engine over tp x pp workers: on GPUs one Ray actor per GPU, in the replica's placement group
    # (vLLM's Ray executor); on CPU child processes of the replica (vLLM's multiprocessing executor).
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    quantization: Literal["fp8"] | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    model_uri: str | None = None
    store: ModelStore | None = None

    @property
    def workers(self) -> int:
        """The engine's worker count (its world size): tensor x pipeline parallel."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    # Tokens gathered into one streamed item: one Serve item per token costs more than decoding it.
    stream_batch_ms: float = 20.0
