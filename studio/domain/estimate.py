"""Resource estimates for a fine-tuning job: memory per worker, the parallel layout, wall time.

Rules of thumb used, so the figures can be checked by hand:
- Weights take 2 bytes a parameter in bf16, 4 in fp32. Training a parameter with AdamW takes 16 bytes
  in all (fp32 master weight + fp32 gradient + two fp32 moments), plus, in bf16, the 2-byte copy that
  autocast makes of every weight for the forward pass.
- LoRA trains r x (d_in + d_out) parameters per adapted matrix; the frozen base costs its weights only.
  QLoRA's base is 4-bit NF4 (0.5 byte a parameter plus 1/16 byte of double-quantized scales) in its
  linear layers, bf16 in the embeddings and norms.
- Activations of a Hugging Face Llama under bf16 autocast (SDPA attention, no recomputation): 44 bytes
  x sequence x micro-batch x hidden per layer, plus 12 x sequence x micro-batch x vocab for the
  logits, their fp32 copy, log-softmax and gradient. Calibrated on an H200 with `bench/cuda_training.py`
  (results in `bench/results/`): 1.1B and 3.6B Llama shapes, LoRA on q/k/v/o and full, 8192 tokens a
  step, measured peak allocation within -7%..+3% of this estimate. Every adapted module beyond q/k/v/o
  (the MLP's gate/up/down with "all-linear" LoRA) keeps (d_in + r) x 2 bytes a token more: dropout's
  copy of its input and the A projection's output.
- Gradient checkpointing keeps only each layer's input (2 bytes x hidden a token, 4 in fp32) and
  recomputes one layer at a time in the backward pass (one layer's activations on top); it costs
  one more forward (2 x parameters FLOPs a token).
- Gradient accumulation: a step of `batch_size` rows runs as batch_size / micro_batch_size
  micro-batches; only one micro-batch's activations are alive at a time.
- Layout, per worker: DDP holds the whole model, gradients and optimizer state on every worker, plus
  DDP's gradient buckets (4 bytes a trainable parameter) when there is more than one. FSDP
  (`fully_shard` per decoder layer, the embeddings, final norm and LM head in the root unit) holds
  1/N of the weights, gradients and optimizer state (16 bytes a trained parameter, the weights of a
  frozen base at their own width), plus the units it gathers: the root unit for the whole step and
  two decoder layers at a time (one prefetched), in the compute dtype, and for a full fine-tune their
  unsharded fp32 gradients before the reduce-scatter. On a GPU FSDP's mixed precision (bf16
  parameters for compute, fp32 gradient reduction) replaces autocast's whole-model copy.
- A GPU keeps 10% headroom and 1 GiB for the CUDA context.
- FLOPs per trained token: 6 x parameters for full fine-tuning, 4 x parameters for LoRA (no weight
  gradients for the frozen base); wall time at 35% of the device's peak (measured on the H200:
  0.65x-1.05x of the estimated tokens/s, small models and LoRA below it), over all workers.
- DPO (`objective="dpo"`) trains on two sequences per row, the preferred and the other output after
  the same input: a step holds the activations of both, and every token is seen twice
  (`dataset_tokens` counts one side, as the dataset statistics do). The reference log-probs take one
  forward (2 x parameters FLOPs a token) without stored activations: LoRA runs it every step (the
  adapter disabled, no extra memory); a full fine-tune runs it once over the dataset before training
  instead of holding a frozen copy of the weights.

`estimate` plans: when the requested configuration does not fit, it tries, in this order, gradient
checkpointing, smaller micro-batches with accumulation (the same rows a step), and sharding with
FSDP over more workers, each only where the plan leaves that choice open; the first configuration
that fits is the plan, and `adjustments` says what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Method = Literal["full", "lora"]
Objective = Literal["supervised", "dpo"]
Precision = Literal["bf16", "fp32"]
Sharding = Literal["ddp", "fsdp"]
Auto = Literal["auto"]

GIB = 1024**3
CUDA_CONTEXT_BYTES = 1 * GIB
HEADROOM = 0.9
MFU = 0.35
TRAINING_BYTES_PER_PARAM = 16
ACTIVATION_BYTES = 44  # per token, hidden unit and layer
LOGIT_BYTES = 12  # per token and vocabulary entry
MAX_WORKERS = 64
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# The LoRA modules of the calibration runs, whose extra activations the 44 bytes already count.
CALIBRATED_MODULES = DEFAULT_TARGET_MODULES
NF4_BYTES_PER_PARAM = 0.5 + 1 / 16  # 4 bits, plus double-quantized absmax scales


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
    """What is to be trained, and how.

    `gradient_checkpointing` and `micro_batch_size` are what the user asked for; "auto" leaves the
    choice to the planner (off / the whole batch unless that does not fit). `micro_batch_size` None is
    the whole batch. `quantized`: QLoRA's 4-bit base (LoRA only, never sharded).
    """

    method: Method
    precision: Precision
    sequence_length: int
    batch_size: int
    dataset_tokens: int
    epochs: int
    lora_rank: int = 16
    lora_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    objective: Objective = "supervised"
    gradient_checkpointing: bool | Auto = False
    micro_batch_size: int | Auto | None = None
    quantized: bool = False


@dataclass(frozen=True, slots=True)
class Device:
    """One accelerator kind (or a CPU worker): memory in bytes, peak dense TFLOP/s at the precision."""

    kind: str
    memory_bytes: int
    peak_tflops: float


@dataclass(frozen=True, slots=True)
class Layout:
    """One concrete way to run a plan: workers, how they share the model, and the step's shape."""

    workers: int
    sharding: Sharding
    gradient_checkpointing: bool
    micro_batch_size: int

    def describe(self, batch_size: int, kind: str) -> str:
        """Return the layout in words, e.g. "4 x H100 (FSDP, gradient checkpointing, micro-batch 2 x 4)"."""
        parts = [self.sharding.upper()]
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        if self.micro_batch_size < batch_size:
            parts.append(f"micro-batch {self.micro_batch_size} x {batch_size // self.micro_batch_size}")
        unit = "CPU worker(s)" if kind == "cpu" else kind
        return f"{self.workers} x {unit} ({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class Estimate:
    """The figures of one layout; `training_state_bytes` is one whole replica's (what DDP holds)."""

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
    sharding: Sharding = "ddp"
    gradient_checkpointing: bool = False
    micro_batch_size: int = 1
    adjustments: tuple[str, ...] = ()


_MODULE_DIMS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _module_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    head_dim = shape.hidden_size // shape.attention_heads
    return {
        "q_proj": (shape.hidden_size, shape.attention_heads * head_dim),
        "k_proj": (shape.hidden_size, shape.kv_heads * head_dim),
        "v_proj": (shape.hidden_size, shape.kv_heads * head_dim),
        "o_proj": (shape.attention_heads * head_dim, shape.hidden_size),
        "gate_proj": (shape.hidden_size, shape.intermediate_size),
        "up_proj": (shape.hidden_size, shape.intermediate_size),
        "down_proj": (shape.intermediate_size, shape.hidden_size),
    }


def target_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """Return the adapted module names, "all-linear" spelled out (every projection of a layer)."""
    return _MODULE_DIMS if "all-linear" in modules else modules


def lora_parameters(shape: ModelShape, rank: int, modules: tuple[str, ...]) -> int:
    """Return the number of trainable LoRA parameters for `modules` in every layer."""
    dims = _module_dims(shape)
    per_layer = sum(
        rank * (d_in + d_out)
        for name in target_modules(modules)
        if (pair := dims.get(name))
        for d_in, d_out in [pair]
    )
    return per_layer * shape.layers


def _root_parameters(shape: ModelShape) -> int:
    """The parameters outside the decoder layers: embeddings, LM head, final norm (FSDP's root unit)."""
    layer = _layer_parameters(shape)
    return max(0, shape.parameters - layer * shape.layers)


def _layer_parameters(shape: ModelShape) -> int:
    dims = _module_dims(shape)
    return sum(d_in * d_out for d_in, d_out in dims.values()) + 2 * shape.hidden_size


def _activations_per_token(shape: ModelShape, plan: TrainingPlan, checkpointing: bool) -> int:
    """Bytes of activations a trained token keeps alive at the peak of a micro-batch's backward."""
    layer = ACTIVATION_BYTES * shape.hidden_size
    if plan.method == "lora":
        dims = _module_dims(shape)
        extra = [name for name in target_modules(plan.lora_modules) if name in dims]
        layer += sum(2 * (dims[name][0] + plan.lora_rank) for name in extra if name not in CALIBRATED_MODULES)
    logits = LOGIT_BYTES * shape.vocab_size
    if not checkpointing:
        return layer * shape.layers + logits
    kept = (2 if plan.precision == "bf16" else 4) * shape.hidden_size * shape.layers
    return kept + layer + logits


def _budget(device: Device) -> float:
    """Bytes a worker may use: a GPU keeps headroom and its CUDA context, a CPU worker its node's memory."""
    return (
        device.memory_bytes * HEADROOM - CUDA_CONTEXT_BYTES if device.kind != "cpu" else device.memory_bytes
    )


def _base_weights(shape: ModelShape, plan: TrainingPlan) -> int:
    """Bytes of the model's weights at the plan's width (QLoRA: 4-bit linear layers)."""
    if plan.quantized:
        layer, root = _layer_parameters(shape), _root_parameters(shape)
        return int(layer * shape.layers * NF4_BYTES_PER_PARAM) + root * 2
    return shape.parameters * (2 if plan.precision == "bf16" else 4)


def estimate_layout(shape: ModelShape, plan: TrainingPlan, device: Device, layout: Layout) -> Estimate:
    """Return the figures of `plan` run as `layout` on `device` (`fits` False with the reason if not)."""
    weight_bytes = 2 if plan.precision == "bf16" else 4
    n = layout.workers
    fsdp = layout.sharding == "fsdp" and n > 1
    weights = _base_weights(shape, plan)
    root, layer = _root_parameters(shape), _layer_parameters(shape)
    if plan.method == "lora":
        trainable = lora_parameters(shape, plan.lora_rank, plan.lora_modules)
        whole_state = weights + trainable * TRAINING_BYTES_PER_PARAM
        sharded = whole_state
        gathered = (root + 2 * layer) * weight_bytes
    else:
        trainable = shape.parameters
        autocast_copy = 2 if plan.precision == "bf16" else 0
        whole_state = shape.parameters * (TRAINING_BYTES_PER_PARAM + autocast_copy)
        sharded = shape.parameters * TRAINING_BYTES_PER_PARAM
        gathered = (root + 2 * layer) * weight_bytes + (root + layer) * 4
    # DDP keeps its gradient buckets beside the gradients when there is more than one worker.
    state = sharded // n + gathered if fsdp else whole_state + (4 * trainable if n > 1 else 0)
    sequences = 2 if plan.objective == "dpo" else 1  # DPO: both outputs of a row in one step
    micro_tokens = plan.sequence_length * layout.micro_batch_size * sequences
    activations = micro_tokens * _activations_per_token(shape, plan, layout.gradient_checkpointing)
    budget = _budget(device)
    per_worker = state + activations
    fits = per_worker <= budget
    reason = None
    if not fits:
        described = layout.describe(plan.batch_size, device.kind)
        reason = (
            f"needs {per_worker / GIB:.1f} GiB per worker as {described}, "
            f"more than the {budget / GIB:.1f} GiB usable on a {device.kind}"
        )
    tokens = plan.dataset_tokens * plan.epochs * sequences
    per_token = 4 if plan.method == "lora" else 6
    if layout.gradient_checkpointing:
        per_token += 2  # the recomputed forward
    flops = per_token * shape.parameters * tokens
    if plan.objective == "dpo":
        # The reference forward: every step for LoRA, once over the dataset for a full fine-tune.
        flops += 2 * shape.parameters * (tokens if plan.method == "lora" else plan.dataset_tokens * sequences)
    wall = flops / (n * device.peak_tflops * 1e12 * MFU)
    return Estimate(
        trainable_parameters=trainable,
        weights_bytes=weights,
        training_state_bytes=whole_state,
        activation_bytes=activations,
        memory_per_worker_bytes=int(per_worker),
        workers=n,
        fits=fits,
        reason=reason,
        tokens_to_train=tokens,
        wall_time_s=wall,
        sharding="fsdp" if fsdp else "ddp",
        gradient_checkpointing=layout.gradient_checkpointing,
        micro_batch_size=layout.micro_batch_size,
    )


def candidate_layouts(
    plan: TrainingPlan, *, min_workers: int = 1, max_workers: int = MAX_WORKERS, shard: bool = True
) -> list[Layout]:
    """Return the layouts the planner tries, in order: as asked, then each fallback the plan allows.

    At each worker count: as asked; gradient checkpointing (if "auto"); smaller micro-batches that
    divide the batch (if "auto"). The worker counts: `min_workers` with DDP, then (not for QLoRA)
    FSDP over `min_workers` (when more than one) and doubling up to `max_workers`, when `shard`.
    """
    gc_asked = plan.gradient_checkpointing is True
    whole = plan.batch_size
    micro_asked = plan.micro_batch_size if isinstance(plan.micro_batch_size, int) else whole
    steps = [(gc_asked, micro_asked)]
    if plan.gradient_checkpointing == "auto":
        steps.append((True, micro_asked))
    if plan.micro_batch_size == "auto":
        gc = steps[-1][0]
        steps += [(gc, m) for m in range(micro_asked - 1, 0, -1) if whole % m == 0]
    counts: list[tuple[int, Sharding]] = [(min_workers, "ddp")]
    if shard and not plan.quantized:
        n = min_workers if min_workers > 1 else 2
        while n <= max_workers:
            counts.append((n, "fsdp"))
            n *= 2
    return [Layout(n, sharding, gc, m) for n, sharding in counts for gc, m in steps]


def adjustments(plan: TrainingPlan, chosen: Estimate) -> tuple[str, ...]:
    """Return what the planner changed from the request, in words (empty when nothing)."""
    changes = []
    if chosen.gradient_checkpointing and plan.gradient_checkpointing != True:  # noqa: E712
        changes.append("gradient checkpointing turned on")
    micro_asked = plan.micro_batch_size if isinstance(plan.micro_batch_size, int) else plan.batch_size
    if chosen.micro_batch_size != micro_asked:
        steps = plan.batch_size // chosen.micro_batch_size
        changes.append(
            f"micro-batch of {chosen.micro_batch_size} with {steps} accumulation steps "
            f"(the same {plan.batch_size} rows a step)"
        )
    if chosen.sharding == "fsdp":
        changes.append(f"sharded with FSDP over {chosen.workers} workers")
    return tuple(changes)


def estimate(
    shape: ModelShape,
    plan: TrainingPlan,
    device: Device,
    *,
    max_workers: int = MAX_WORKERS,
    min_workers: int = 1,
) -> Estimate:
    """Return the plan's first layout that fits (see `candidate_layouts`), with what was adjusted.

    `min_workers` is where the search starts (data-parallel CPU workers: the configured number);
    `max_workers` caps it (1: a single worker, no sharding). When nothing fits, the returned estimate
    is that of the last layout tried (the most sharded, every fallback on), `fits` False with why.
    """
    # Sharding pays for itself when the state does not fit: always worth trying for a full fine-tune;
    # for LoRA only when the frozen base alone does not fit one device (else activations are the cause).
    shard = plan.method == "full" or _base_weights(shape, plan) > _budget(device)
    top = max(min_workers, max_workers)
    last: Estimate | None = None
    for layout in candidate_layouts(plan, min_workers=min_workers, max_workers=top, shard=shard):
        last = estimate_layout(shape, plan, device, layout)
        if last.fits:
            return replace(last, adjustments=adjustments(plan, last))
    assert last is not None  # there is always the layout as asked
    return last


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
