"""The deployment planner: how a model server replica is split over GPUs, and the memory each GPU needs.

A replica runs one vLLM engine over `tensor_parallel_size x pipeline_parallel_size` workers, one GPU
each: tensor parallelism splits every layer's matrices (and attention heads) over the workers of one
node, pipeline parallelism splits the layers into stages (which may sit on different nodes).

Memory per GPU, rules of thumb that can be checked by hand (tests/unit/domain/test_serving_plan.py works
them through for Llama-3.1 8B and 70B):
- Weights: 2 bytes a parameter in bf16/fp16 (`dtype` "auto" is taken as 16-bit: the dtype published
  checkpoints carry), 4 in fp32. With `quantization="fp8"` (vLLM quantizes at load) the linear layers'
  weights take 1 byte; embeddings, the LM head and norms stay 16-bit. All of it splits evenly over the
  tp x pp workers (the embeddings are vocabulary-parallel).
- KV cache: vLLM refuses to start unless one sequence of `max_model_len` tokens fits. A token takes
  2 (K and V) x layers / pp x KV heads per worker x head_dim x bytes (2, or 1 with `kv_cache_dtype`
  fp8). KV heads split over tp; when tp exceeds them each worker keeps a replica of one.
- Activations: vLLM sizes its budget by profiling one forward pass of `max_num_batched_tokens` (8192 for
  its OpenAI server on 80 GB cards). The peak is within one layer: tokens x (3 x intermediate / tp +
  6 x hidden) x 2 bytes, plus fp32 logits (and a copy) of 256 sequences x vocabulary / tp.
- Overhead: 2 GiB a GPU for the CUDA context, CUDA graphs and NCCL buffers.
- Budget: `gpu_memory_gib x gpu_memory_utilization`, the share vLLM allows itself; all of the above
  must fit in it, and what is left is KV cache for more sequences (`kv_cache_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from studio.domain.estimate import GIB, ModelShape
from studio.errors import InvalidInput

Quantization = Literal["fp8"]
KvCacheDtype = Literal["auto", "fp8"]

DEFAULT_GPU_MEMORY_GIB = 80.0
MAX_WORKERS = 64
PROFILE_TOKENS = 8192
PROFILE_SEQUENCES = 256
OVERHEAD_BYTES = 2 * GIB
ACTIVATION_BYTES = 2
LOGIT_BYTES = 4 * 2  # fp32 logits and the sampler's fp32 copy
_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingRequest:
    """What a deployment asks of each replica (the engine options and the GPU it runs on)."""

    num_gpus: float
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: Quantization | None = None
    kv_cache_dtype: KvCacheDtype = "auto"
    gpu_memory_utilization: float = 0.9
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB


@dataclass(frozen=True, slots=True)
class ParallelLayout:
    """How one replica's engine is split: `workers` = tp x pp processes, one GPU each on GPUs."""

    tensor_parallel_size: int
    pipeline_parallel_size: int

    @property
    def workers(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """Bytes one GPU of a replica needs, by part, against the budget vLLM allows itself."""

    weights_bytes: int
    kv_cache_bytes: int  # one sequence of `max_model_len` tokens: the least vLLM starts with
    activation_bytes: int
    overhead_bytes: int
    budget_bytes: int
    max_model_len: int
    kv_bytes_per_token: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of KV cache the budget holds once weights, activations and overhead are in (>= 0)."""
        free = self.budget_bytes - self.weights_bytes - self.activation_bytes - self.overhead_bytes
        return max(0, free // self.kv_bytes_per_token)

    def describe(self, layout: ParallelLayout) -> str:
        """Return the figures behind the estimate, for error messages."""
        return (
            f"{self.total_bytes / GIB:.1f} GiB per GPU with tensor_parallel_size "
            f"{layout.tensor_parallel_size} and pipeline_parallel_size {layout.pipeline_parallel_size} "
            f"(weights {self.weights_bytes / GIB:.1f}, KV cache for one {self.max_model_len}-token sequence "
            f"{self.kv_cache_bytes / GIB:.1f}, activations {self.activation_bytes / GIB:.1f}, overhead "
            f"{self.overhead_bytes / GIB:.1f})"
        )


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    """The layout chosen for a replica and, on GPUs with a known model shape, its memory estimate."""

    layout: ParallelLayout
    memory: MemoryEstimate | None


def _is_whole(value: float) -> bool:
    return float(value).is_integer()


def parallel_layout(
    *, num_gpus: float, tensor_parallel_size: int | None, pipeline_parallel_size: int | None
) -> ParallelLayout:
    """Return the replica's split: by default every GPU of the replica is a tensor-parallel worker.

    With GPUs, `tp x pp` must equal `num_gpus` (one GPU per worker: none left idle, none shared); a
    fraction of a GPU holds one worker. Without GPUs the sizes default to 1.

    Raises:
        InvalidInput: `num_gpus` above 1 and not whole, or sizes that do not multiply to it.
    """
    if num_gpus > 1 and not _is_whole(num_gpus):
        raise InvalidInput(
            f"num_gpus above 1 must be a whole number (one GPU per engine worker), got {num_gpus:g}",
            param="num_gpus",
            code="invalid_parallel_layout",
        )
    pp = pipeline_parallel_size or 1
    if num_gpus < 1:  # CPU, or a fraction of one GPU: a single GPU worker at most
        tp = tensor_parallel_size or 1
        if num_gpus > 0 and tp * pp > 1:
            raise InvalidInput(
                f"a fraction of a GPU (num_gpus {num_gpus:g}) holds one engine worker: "
                f"tensor_parallel_size x pipeline_parallel_size must be 1, got {tp} x {pp}",
                param="engine.tensor_parallel_size",
                code="invalid_parallel_layout",
            )
        return ParallelLayout(tp, pp)
    gpus = int(num_gpus)
    if tensor_parallel_size is None:
        if gpus % pp:
            raise InvalidInput(
                f"pipeline_parallel_size {pp} does not divide num_gpus {gpus}",
                param="engine.pipeline_parallel_size",
                code="invalid_parallel_layout",
            )
        return ParallelLayout(gpus // pp, pp)
    if tensor_parallel_size * pp != gpus:
        raise InvalidInput(
            f"tensor_parallel_size x pipeline_parallel_size ({tensor_parallel_size} x {pp} = "
            f"{tensor_parallel_size * pp}) must equal num_gpus ({gpus}): each engine worker holds one GPU",
            param="engine.tensor_parallel_size",
            code="invalid_parallel_layout",
        )
    return ParallelLayout(tensor_parallel_size, pp)


def shard_problem(shape: ModelShape, layout: ParallelLayout) -> str | None:
    """Return why vLLM cannot split this model so (None when it can).

    vLLM needs tp to divide the attention heads, and KV heads and tp to divide one another (KV heads are
    split, or replicated when fewer than tp); each pipeline stage needs at least one layer.
    """
    tp, pp = layout.tensor_parallel_size, layout.pipeline_parallel_size
    if shape.attention_heads % tp:
        return (
            f"tensor_parallel_size {tp} does not divide the model's {shape.attention_heads} attention heads"
        )
    if shape.kv_heads % tp and tp % shape.kv_heads:
        return (
            f"tensor_parallel_size {tp} and the model's {shape.kv_heads} KV heads do not divide one another"
        )
    if pp > shape.layers:
        return f"pipeline_parallel_size {pp} exceeds the model's {shape.layers} layers"
    return None


def weight_bytes(shape: ModelShape, *, dtype: str, quantization: Quantization | None) -> int:
    """Return the bytes of the model's weights as the engine holds them (all workers together)."""
    width = _DTYPE_BYTES.get(dtype, 2)
    if quantization != "fp8":
        return shape.parameters * width
    head_dim = shape.hidden_size // shape.attention_heads
    attention = 2 * shape.hidden_size * shape.attention_heads * head_dim
    attention += 2 * shape.hidden_size * shape.kv_heads * head_dim
    linear = shape.layers * (attention + 3 * shape.hidden_size * shape.intermediate_size)
    return linear + (shape.parameters - linear) * width


def memory_per_gpu(shape: ModelShape, layout: ParallelLayout, request: ServingRequest) -> MemoryEstimate:
    """Return the memory one GPU of a replica needs with `layout` (see the module's rules)."""
    tp, pp = layout.tensor_parallel_size, layout.pipeline_parallel_size
    width = _DTYPE_BYTES.get(request.dtype, 2)
    head_dim = shape.hidden_size // shape.attention_heads
    kv_width = 1 if request.kv_cache_dtype == "fp8" else width
    kv_heads = max(1, shape.kv_heads // tp)
    layers = -(-shape.layers // pp)  # the largest stage
    per_token = 2 * layers * kv_heads * head_dim * kv_width
    max_len = request.max_model_len or shape.context_length
    weights = weight_bytes(shape, dtype=request.dtype, quantization=request.quantization)
    activations = (
        PROFILE_TOKENS * (3 * shape.intermediate_size // tp + 6 * shape.hidden_size) * ACTIVATION_BYTES
        + PROFILE_SEQUENCES * (shape.vocab_size // tp) * LOGIT_BYTES
    )
    return MemoryEstimate(
        weights_bytes=-(-weights // layout.workers),
        kv_cache_bytes=per_token * max_len,
        activation_bytes=activations,
        overhead_bytes=OVERHEAD_BYTES,
        budget_bytes=int(request.gpu_memory_gib * GIB * request.gpu_memory_utilization),
        max_model_len=max_len,
        kv_bytes_per_token=per_token,
    )


def smallest_tensor_parallel(
    shape: ModelShape, request: ServingRequest, *, pipeline_parallel_size: int = 1
) -> int | None:
    """Return the smallest power-of-two tensor-parallel size the model can be split into that fits the
    GPU, with `pipeline_parallel_size` stages (None when none up to 64 workers does)."""
    tp = 1
    while tp * pipeline_parallel_size <= MAX_WORKERS:
        layout = ParallelLayout(tp, pipeline_parallel_size)
        if shard_problem(shape, layout) is None and memory_per_gpu(shape, layout, request).fits:
            return tp
        tp *= 2
    return None


def plan_deployment(shape: ModelShape | None, request: ServingRequest) -> DeploymentPlan:
    """Return the layout of a replica and, on GPUs, its memory per GPU; refuse what cannot run.

    `shape` None (a model whose config the studio does not know) skips the checks that need it.

    Raises:
        InvalidInput: the layout is inconsistent with `num_gpus`, the model cannot be split so,
            `max_model_len` exceeds the model's context, or the replica does not fit its GPUs (the
            message names GiB needed per GPU vs usable, and the smallest tensor-parallel size that fits).
    """
    layout = parallel_layout(
        num_gpus=request.num_gpus,
        tensor_parallel_size=request.tensor_parallel_size,
        pipeline_parallel_size=request.pipeline_parallel_size,
    )
    if request.num_gpus <= 0 and layout.pipeline_parallel_size > 1:
        raise InvalidInput(
            "vLLM's CPU backend cannot run pipeline parallel stages (its second stage fails on the first "
            "request): leave pipeline_parallel_size at 1 without GPUs; tensor_parallel_size works",
            param="engine.pipeline_parallel_size",
            code="invalid_parallel_layout",
        )
    if request.quantization == "fp8" and request.num_gpus <= 0:
        raise InvalidInput(
            "quantization fp8 needs a GPU (vLLM's CPU backend has no fp8 kernels): set num_gpus",
            param="engine.quantization",
            code="gpu_required",
        )
    if shape is None:
        return DeploymentPlan(layout, None)
    problem = shard_problem(shape, layout)
    if problem is not None:
        raise InvalidInput(
            f"the model cannot be split so: {problem}",
            param="engine.tensor_parallel_size",
            code="invalid_parallel_layout",
        )
    if request.max_model_len is not None and request.max_model_len > shape.context_length:
        raise InvalidInput(
            f"max_model_len {request.max_model_len} exceeds the model's context length "
            f"{shape.context_length}",
            param="engine.max_model_len",
        )
    if request.num_gpus <= 0:
        return DeploymentPlan(layout, None)  # CPU memory is the host's: vLLM's KV cache size is set
    memory = memory_per_gpu(shape, layout, request)
    if not memory.fits:
        raise InvalidInput(_too_big(shape, layout, memory, request), param="num_gpus", code="model_too_large")
    return DeploymentPlan(layout, memory)


def _too_big(
    shape: ModelShape, layout: ParallelLayout, memory: MemoryEstimate, request: ServingRequest
) -> str:
    pp = layout.pipeline_parallel_size
    message = (
        f"the model does not fit: it needs {memory.describe(layout)}, more than the "
        f"{memory.budget_bytes / GIB:.1f} GiB usable of a {request.gpu_memory_gib:g} GiB GPU at "
        f"gpu_memory_utilization {request.gpu_memory_utilization:g}"
    )
    smallest = smallest_tensor_parallel(shape, request, pipeline_parallel_size=pp)
    if smallest is not None and smallest > layout.tensor_parallel_size:
        return (
            f"{message}; the smallest tensor-parallel size that fits is {smallest}: ask for num_gpus "
            f"{smallest * pp}"
        )
    return (
        f"{message}; no tensor-parallel size up to {MAX_WORKERS // pp} fits: lower max_model_len, use "
        "quantization fp8 or kv_cache_dtype fp8, or add pipeline_parallel_size stages"
    )
