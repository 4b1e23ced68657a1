"""What every training objective shares: the model, optimizer, schedule, checkpoints and counters.

`Run` loads the model (LoRA-wrapped base, QLoRA's 4-bit base with LoRA, or the full model; fp32
master weights, bf16 autocast on CUDA), builds AdamW with a linear warmup/decay schedule, and when a
process group is up either shards the model with FSDP2 (`config.sharding` "fsdp", see
`studio.training.sharding`; before the optimizer is built, so it holds the shards) or wraps it in DDP.
It writes and restores checkpoints (a sharded run's in DCP's format, resumable on any number of
ranks) and writes the final artifact whole. An objective subclasses it
(`studio.training.supervised.SupervisedRun`, `studio.training.dpo.DpoRun`) and says how rows become
items, how a step trains on them and how the validation set is scored; `studio.training.loop.train`
drives it.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from studio.training.config import (
    STATE_FILE,
    TrainConfig,
    atomic_dir,
    latest_checkpoint,
    publish_dir,
    remove_leftovers,
)
from studio.training.data import steps_per_epoch
from studio.training.ranks import any_rank, barrier, is_distributed, unwrap
from studio.training.sharding import (
    full_state_dict,
    is_sharded_checkpoint,
    load_sharded,
    save_sharded,
    shard,
    shared_temporary,
)

ItemT = TypeVar("ItemT")
Report = Callable[[dict[str, Any]], None]
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
)  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """Return the device for `name`; "auto" is the current CUDA device when there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _from_pretrained_dtype(dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    # `torch_dtype` was renamed `dtype` in transformers 4.56; the old name warns in 5.x.
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _load_quantized_base(config: TrainConfig, device: torch.device) -> Any:
    """Return QLoRA's base: 4-bit NF4 weights (double-quantized), bf16 compute, prepared for training.

    Unverified on a GPU in this repository (none where it is developed); CPU runs are refused.
    """
    if device.type != "cuda":
        raise ValueError("QLoRA loads the base in 4 bits with bitsandbytes, which needs a CUDA GPU")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    base = AutoModelForCausalLM.from_pretrained(
        config.base_model,
        quantization_config=quantization,
        device_map={"": device.index or 0},
        **_from_pretrained_dtype(torch.bfloat16),
    )
    prepared: Any = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        base, use_gradient_checkpointing=config.gradient_checkpointing
    )
    return prepared


def _load_model(config: TrainConfig, device: torch.device, resume: Path | None, *, place: bool) -> nn.Module:
    """Return the trainable model: LoRA-wrapped base (QLoRA: a 4-bit one), or the full model.

    `resume` is a checkpoint in Hugging Face's format to start from (None: the base). The model is
    moved to `device` when `place` (an FSDP run moves it unit by unit as it shards it).
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    if config.method == "full":
        # fp32 master weights; on CUDA the forward runs under bf16 autocast.
        source = resume or config.base_model
        model: Any = AutoModelForCausalLM.from_pretrained(source, **_from_pretrained_dtype(torch.float32))
    else:
        if config.method == "qlora":
            base = _load_quantized_base(config, device)
        else:
            # The frozen base can live in bf16 on a GPU; peft keeps the adapter weights in fp32.
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            base = AutoModelForCausalLM.from_pretrained(config.base_model, **_from_pretrained_dtype(dtype))
        if resume is not None:
            model = PeftModel.from_pretrained(base, str(resume), is_trainable=True)
        else:
            targets = config.lora_target_modules
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                # peft's own spelling: every linear layer but the output head.
                target_modules="all-linear" if "all-linear" in targets else list(targets),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(base, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.method != "full":
            # The frozen embeddings give no gradient; checkpointed layers need inputs that require one.
            model.enable_input_require_grads()
    if not place or config.method == "qlora":  # a 4-bit model is placed by its device_map
        return model  # type: ignore[no-any-return]
    trainable: nn.Module = model.to(device)
    return trainable


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Return the forward pass's autocast: bf16 on CUDA (fp32 master weights), nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True, slots=True)
class StepStats:
    """One optimizer step, all ranks' figures: mean loss, tokens seen, trained tokens, extra metrics."""

    loss: float
    tokens: int
    trained: int
    metrics: dict[str, float] = field(default_factory=dict)


class Run(Generic[ItemT]):
    """The mutable state of one `train` call: model, optimizer, counters; the objective's hooks.

    A subclass says how rows become items (`load`), how one optimizer step trains on some of them
    (`train_step`), how the validation set is scored (`evaluate`), and what it prepares once the
    model is in place (`prepare`) or keeps beside a checkpoint (`save_extra` / `restore_extra`).
    """

    objective = "supervised"

    def __init__(self, config: TrainConfig, report: Report | None) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.base_model = Path(config.base_model)
        if not self.base_model.is_dir():
            raise ValueError(
                f"base_model {config.base_model!r} is not a local model directory "
                "(resolve a model name first: studio.training.models.resolve_base_model)"
            )
        self.is_main = config.rank == 0
        self._report = report
        self.device = resolve_device(config.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.base_model)
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.train_set: list[ItemT] = self.load(config.training_file)
        self.valid_set: list[ItemT] = self.load(config.validation_file) if config.validation_file else []
        self.per_epoch = steps_per_epoch(
            len(self.train_set), config.batch_size, config.gradient_accumulation_steps, config.world_size
        )
        self.total_steps = self.per_epoch * config.n_epochs
        self.checkpoints = config.output_dir / "checkpoints"
        self.step = 0
        self.trained_tokens = 0
        self.last_loss: float | None = None
        self.last_checkpoint: Path | None = None
        self.checkpoint_step = -1
        # Whether the model is sharded with FSDP (then every forward is collective: ranks run the same
        # number of them, see `ranks.lockstep_rounds`).
        self.sharded = False

    def load(self, path: Path) -> list[ItemT]:
        """Return the items of the JSONL file at `path` (raises ValueError for unusable data)."""
        raise NotImplementedError

    def train_step(self, micro_batches: list[list[int]]) -> StepStats:
        """Run one optimizer step on the items at these indices; return all ranks' figures."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Return the validation metrics (`valid_*`) of the model now; every rank calls it together."""
        raise NotImplementedError

    def prepare(self, resumed: bool) -> None:
        """Called once the model is loaded (and restored when `resumed`), before the first step."""

    def save_extra(self, folder: Path) -> None:
        """Write what the objective keeps beside a checkpoint into `folder` (rank 0 only)."""

    def restore_extra(self, checkpoint: Path) -> None:
        """Read back what `save_extra` wrote."""

    def emit(self, event: dict[str, Any]) -> None:
        if self.is_main and self._report is not None:
            self._report(event)

    def setup(self) -> None:
        """Build the model, optimizer and schedule, restoring them from the latest checkpoint if any."""
        config = self.config
        torch.manual_seed(config.seed + config.rank)
        if self.is_main:
            remove_leftovers(config.output_dir, self.checkpoints)
        resume = latest_checkpoint(self.checkpoints)
        sharded_resume = resume is not None and is_sharded_checkpoint(resume)
        self.sharded = config.sharding == "fsdp" and is_distributed()
        if self.sharded and resume is not None and not sharded_resume:
            raise RuntimeError(
                f"checkpoint {resume} was written by a DDP run; it cannot resume sharded (FSDP)"
            )
        if is_distributed() and self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # NCCL collectives (`sum_over_ranks`) use it
        model = _load_model(config, self.device, None if sharded_resume else resume, place=not self.sharded)
        model.train()
        if self.sharded:
            model = shard(model, self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _linear_schedule(warmup, self.total_steps)
        )
        if resume is not None:
            self._restore(resume, model)
        if is_distributed() and not self.sharded:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.model = model
        self.prepare(resumed=resume is not None)

    def _restore(self, checkpoint: Path, model: nn.Module) -> None:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        theirs = (state["method"], state.get("objective", "supervised"), state["total_steps"])
        ours = (self.config.method, self.objective, self.total_steps)
        if theirs != ours:
            raise RuntimeError(
                f"checkpoint {checkpoint} is of another run ({theirs[0]} {theirs[1]}, {theirs[2]} steps), "
                f"not this one ({ours[0]} {ours[1]}, {ours[2]} steps)"
            )
        device = self.device
        if is_sharded_checkpoint(checkpoint):
            load_sharded(model, self.optimizer, checkpoint)
        else:
            self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", device, weights_only=True))
        rng = torch.load(checkpoint / "rng_state.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = self.checkpoint_step = int(state["step"])
        self.trained_tokens = int(state["trained_tokens"])
        self.last_loss = state["train_loss"]
        self.last_checkpoint = checkpoint
        self.restore_extra(checkpoint)

    def save_checkpoint(self) -> None:
        """Write `checkpoints/step-<step>` atomically (rank 0) and report it."""
        if self.checkpoint_step == self.step:
            return
        self.checkpoint_step = self.step
        free, floor = self._disk_space()
        if any_rank(free < floor):  # every rank skips together (a sharded save is collective)
            self.emit({
                "type": "warning",
                "message": f"Checkpoint at step {self.step} skipped: {free / 1024**3:.1f} GiB free on the "
                f"data disk, under its guard of {floor / 1024**3:.1f} GiB (the job goes on; it resumes "
                "from its last checkpoint if it is stopped)",
            })  # fmt: skip
            return
        if self.config.sharding == "fsdp":
            self._save_sharded_checkpoint()
            return
        if self.is_main:

            def write(tmp: Path) -> None:
                unwrap(self.model).save_pretrained(str(tmp))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                self._save_common(tmp)

            path = atomic_dir(self.checkpoints / f"step-{self.step}", write)
            self.last_checkpoint = path
            self.emit({"type": "checkpoint", "step": self.step, "path": str(path)})
        barrier()

    def _disk_space(self) -> tuple[int, int]:
        """Return the output disk's free bytes and the guard's floor (0: no guard)."""
        config = self.config
        if not config.min_free_bytes and not config.min_free_percent:
            return 0, 0
        usage = shutil.disk_usage(config.output_dir)
        return usage.free, max(config.min_free_bytes, int(usage.total * config.min_free_percent / 100))

    def _save_sharded_checkpoint(self) -> None:
        """Write `checkpoints/step-<step>` with every rank's shards (DCP), rank 0 the rest; rename it."""
        target = self.checkpoints / f"step-{self.step}"
        tmp = shared_temporary(target)
        save_sharded(self.model, self.optimizer, tmp)
        barrier()  # every rank's shards are written before rank 0 renames the folder
        if self.is_main:
            self._save_common(tmp)
            publish_dir(tmp, target)
            self.last_checkpoint = target
            self.emit({"type": "checkpoint", "step": self.step, "path": str(target)})
        barrier()

    def _save_common(self, tmp: Path) -> None:
        """Write what every checkpoint has beside the weights: schedule, RNG, the objective's, state."""
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        torch.save(rng, tmp / "rng_state.pt")
        self.save_extra(tmp)
        state = {
            "step": self.step,
            "epoch": self.step / self.per_epoch,
            "total_steps": self.total_steps,
            "trained_tokens": self.trained_tokens,
            "train_loss": self.last_loss,
            "method": self.config.method,
            "objective": self.objective,
            "seed": self.config.seed,
            "world_size": self.config.world_size,
            "sharding": self.config.sharding,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    def ddp(self) -> nn.parallel.DistributedDataParallel:
        """Return the model as its DDP wrapper (only in a distributed run)."""
        assert isinstance(self.model, nn.parallel.DistributedDataParallel)
        return self.model

    def syncing(self, k: int, count: int) -> AbstractContextManager[Any]:
        """Return the context of micro-batch `k` of `count`: DDP syncs gradients on the last one only."""
        if k == count - 1 or not isinstance(self.model, nn.parallel.DistributedDataParallel):
            return nullcontext()
        return self.ddp().no_sync()

    def optimizer_step(self) -> None:
        """Clip the gradients, step the optimizer and the schedule, and clear the gradients."""
        if self.config.max_grad_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save_final(self) -> Path:
        """Write `final/` (adapter or full model in the base's dtype, plus tokenizer) on rank 0."""
        path = self.config.output_dir / "final"
        # A sharded model is gathered whole first (every rank takes part; rank 0 gets it, on its CPU).
        state = full_state_dict(self.model) if self.sharded else None
        if self.is_main:
            model = unwrap(self.model)
            dtype = _base_dtype(self.base_model)
            if self.config.method == "full" and state is None:
                model.to(dtype)
            elif self.config.method == "full" and state is not None:
                state = {name: tensor.to(dtype) for name, tensor in state.items()}

            def write(tmp: Path) -> None:
                if state is None:
                    model.save_pretrained(str(tmp))
                else:
                    model.save_pretrained(str(tmp), state_dict=state)
                _copy_tokenizer(self.base_model, tmp, self.tokenizer)

            atomic_dir(path, write)
        barrier()
        return path


def _copy_tokenizer(base_model: Path, dest: Path, tokenizer: Any) -> None:
    """Copy the base model's tokenizer files as they are, else save the loaded tokenizer."""
    # Verbatim copies keep the layout the base was published with (template in tokenizer_config.json,
    # special_tokens_map.json), which the installed transformers might otherwise rewrite.
    copied = [name for name in TOKENIZER_FILES if (base_model / name).is_file()]
    for name in copied:
        shutil.copy2(base_model / name, dest / name)
    if not copied:
        tokenizer.save_pretrained(str(dest))


def _base_dtype(base_model: Path) -> torch.dtype:
    config = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
