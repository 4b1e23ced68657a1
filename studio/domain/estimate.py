"""Resource estimates for a fine-tuning job: memory per worker, number of GPUs, wall time.

Rules of thumb used, so the figures can be checked by hand:
- Weights take 2 bytes a parameter in bf16, 4 in fp32. Training a parameter with AdamW takes 16 bytes
  in all (fp32 master weight + fp32 gradient + two fp32 moments), plus, in bf16, the 2-byte copy that
  autocast makes of every weight for the forward pass.
- LoRA trains r x (d_in + d_out) parameters per adapted matrix; the frozen base costs its weights only.
- Activations of a Hugging Face Llama under bf16 autocast (SDPA attention, no recomputation): 44 bytes
  x sequence x batch x hidden per layer, plus 12 x sequence x batch x vocab for the logits, their fp32
  copy, log-softmax and gradient. Calibrated on an H200 with `bench/cuda_training.py` (results in
  `bench/results/`): 1.1B and 3.6B Llama shapes, LoRA and full, 8192 tokens a step, measured peak
  allocation within -7%..+3% of this estimate.
- A GPU keeps 10% headroom and 1 GiB for the CUDA context. Full fine-tunes that do not fit one GPU
  shard weights, gradients and optimizer state over N GPUs (ZeRO-3 / FSDP); activations do not shard.
- FLOPs per trained token: 6 x parameters for full fine-tuning, 4 x parameters for LoRA (no weight
  gradients for the frozen base); wall time at 35% of the device's peak (measured on the H200:
  0.65x-1.05x of the estimated tokens/s, small models and LoRA below it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Method = Literal["full", "lora"]
Precision = Literal["bf16", "fp32"]

GIB = 1024**3
CUDA_CONTEXT_BYTES = 1 * GIB
HEADROOM = 0.9
MFU = 0.35
TRAINING_BYTES_PER_PARAM = 16
ACTIVATION_BYTES = 44  # per token, hidden unit and layer
LOGIT_BYTES = 12  # per token and vocabulary entry
MAX_WORKERS = 64
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the estimate needs to know of a decoder-only transformer."""

    parameters: int
    layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    attention_heads: int
    kv_heads: int
    context_length: int


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """Return the shape of a Llama-like model from its Hugging Face `config.json` contents.

    Raises:
        KeyError: a required field is missing. ValueError: a size is not a positive integer.
    """
    sizes = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "head_dim", "max_position_embeddings")  # fmt: skip
    for name in sizes:
        value = config.get(name)
        if value is None:  # absent (or null, as some configs write head_dim): the default applies
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])
    inter = int(config.get("intermediate_size") or 4 * hidden)
    heads = int(config.get("num_attention_heads") or max(1, hidden // 128))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or max(1, hidden // heads))
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    parameters = layers * (attention + mlp + 2 * hidden) + embeddings + hidden
    return ModelShape(
        parameters=parameters,
        layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        vocab_size=vocab,
        attention_heads=heads,
        kv_heads=kv_heads,
        context_length=int(config.get("max_position_embeddings") or 2048),
    )


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """What is to be trained, and how."""

    method: Method
    precision: Precision
    sequence_length: int
    batch_size: int
    dataset_tokens: int
    epochs: int
    lora_rank: int = 16
    lora_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES


@dataclass(frozen=True, slots=True)
class Device:
    """One accelerator kind (or a CPU worker): memory in bytes, peak dense TFLOP/s at the precision."""

    kind: str
    memory_bytes: int
    peak_tflops: float


@dataclass(frozen=True, slots=True)
class Estimate:
    trainable_parameters: int
    weights_bytes: int
    training_state_bytes: int
    activation_bytes: int
    memory_per_worker_bytes: int
    workers: int
    fits: bool
    reason: str | None
    tokens_to_train: int
    wall_time_s: float


def lora_parameters(shape: ModelShape, rank: int, modules: tuple[str, ...]) -> int:
    """Return the number of trainable LoRA parameters for `modules` in every layer."""
    head_dim = shape.hidden_size // shape.attention_heads
    dims = {
        "q_proj": (shape.hidden_size, shape.attention_heads * head_dim),
        "k_proj": (shape.hidden_size, shape.kv_heads * head_dim),
        "v_proj": (shape.hidden_size, shape.kv_heads * head_dim),
        "o_proj": (shape.attention_heads * head_dim, shape.hidden_size),
        "gate_proj": (shape.hidden_size, shape.intermediate_size),
        "up_proj": (shape.hidden_size, shape.intermediate_size),
        "down_proj": (shape.intermediate_size, shape.hidden_size),
    }
    per_layer = sum(
        rank * (d_in + d_out) for name in modules if (pair := dims.get(name)) for d_in, d_out in [pair]
    )
    return per_layer * shape.layers


def estimate(
    shape: ModelShape, plan: TrainingPlan, device: Device, *, max_workers: int = MAX_WORKERS
) -> Estimate:
    """Return memory per worker, workers needed and wall time; `fits` False with the reason if none fit.

    `max_workers` caps the sharding of a full fine-tune (1: every worker holds a whole copy, as with
    data-parallel CPU workers).
    """
    weight_bytes_per_param = 2 if plan.precision == "bf16" else 4
    weights = shape.parameters * weight_bytes_per_param
    if plan.method == "lora":
        trainable = lora_parameters(shape, plan.lora_rank, plan.lora_modules)
        sharded_state = weights + trainable * TRAINING_BYTES_PER_PARAM
    else:
        trainable = shape.parameters
        autocast_copy = 2 if plan.precision == "bf16" else 0
        sharded_state = shape.parameters * (TRAINING_BYTES_PER_PARAM + autocast_copy)
    tokens_per_step = plan.sequence_length * plan.batch_size
    activations = tokens_per_step * (
        ACTIVATION_BYTES * shape.hidden_size * shape.layers + LOGIT_BYTES * shape.vocab_size
    )
    budget = (
        device.memory_bytes * HEADROOM - CUDA_CONTEXT_BYTES if device.kind != "cpu" else device.memory_bytes
    )
    workers, per_worker = 1, sharded_state + activations
    # Only full fine-tunes shard their state; a LoRA job that does not fit one device fits none.
    while per_worker > budget and plan.method == "full" and workers < max_workers:
        workers *= 2
        per_worker = sharded_state // workers + activations
    fits = per_worker <= budget
    reason = None
    if not fits:
        reason = (
            f"needs {per_worker / GIB:.1f} GiB per worker with {workers} worker(s), more than the "
            f"{budget / GIB:.1f} GiB usable on a {device.kind}"
        )
    tokens = plan.dataset_tokens * plan.epochs
    flops = (4 if plan.method == "lora" else 6) * shape.parameters * tokens
    wall = flops / (workers * device.peak_tflops * 1e12 * MFU)
    return Estimate(
        trainable_parameters=trainable,
        weights_bytes=weights,
        training_state_bytes=sharded_state,
        activation_bytes=activations,
        memory_per_worker_bytes=int(per_worker),
        workers=workers,
        fits=fits,
        reason=reason,
        tokens_to_train=tokens,
        wall_time_s=wall,
    )


# Ray's `accelerator_type:<name>` resources -> memory and dense bf16 TFLOP/s (vendor datasheets). Ray
# names the A100 variants `A100-40G` / `A100-80G` on recent versions; plain `A100` is taken as 40 GB.
ACCELERATORS: dict[str, Device] = {
    device.kind: device
    for device in (
        Device("H200", 141 * GIB, 989.0),
        Device("H100", 80 * GIB, 989.0),
        Device("A100-80G", 80 * GIB, 312.0),
        Device("A100-40G", 40 * GIB, 312.0),
        Device("A100", 40 * GIB, 312.0),
        Device("L40S", 48 * GIB, 362.0),
        Device("A10G", 24 * GIB, 125.0),
        Device("L4", 24 * GIB, 121.0),
        Device("V100", 16 * GIB, 125.0),
        Device("T4", 16 * GIB, 65.0),
    )
}


def accelerator(kind: str, *, default_memory_bytes: int, default_tflops: float) -> Device:
    """Return the known figures for an accelerator kind, or the given defaults for an unknown one."""
    return ACCELERATORS.get(kind) or Device(kind, default_memory_bytes, default_tflops)
