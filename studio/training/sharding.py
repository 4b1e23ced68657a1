"""FSDP2 for the training loop: sharding a model, sharded checkpoints (DCP), the whole model at the end.

`shard` applies `torch.distributed.fsdp.fully_shard` (FSDP2) to every decoder layer and then to the
whole model (the root unit: embeddings, final norm, LM head), so each rank keeps 1/world of the
parameters, gradients and optimizer state, and gathers one layer at a time. On a GPU the parameters
are gathered in bf16 and the gradients reduced in fp32 (`MixedPrecisionPolicy`); on the CPU (gloo)
there is no mixed precision: everything stays fp32. FSDP2 works on the CPU with gloo in torch 2.13
(all-gather and reduce-scatter are implemented there); it needs a process group, so a run of one
rank is not sharded, only checkpointed the same way.

Checkpoints of a sharded run are written with `torch.distributed.checkpoint` (DCP) into
`<checkpoint>/sharded/`: every rank writes its own shards, and the files record the global tensors,
so a run on any number of ranks (one without a process group included) loads them. Only trainable
parameters are saved (a LoRA checkpoint holds the adapter, not the frozen base), with the optimizer
state, keyed by parameter names.

Every function here is collective in a distributed run: every rank must call it at the same point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from studio.training.ranks import is_distributed

SHARDED_DIR = "sharded"


def is_sharded_checkpoint(checkpoint: Path) -> bool:
    """Return True when `checkpoint` was written by a sharded (FSDP) run, in DCP's format."""
    return (checkpoint / SHARDED_DIR).is_dir()


def _layer_classes(model: nn.Module) -> set[str]:
    """Return the class names of the model's repeated blocks (Hugging Face's `_no_split_modules`)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names or {"LlamaDecoderLayer"}


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard `model` in place over the ranks of the process group with FSDP2; return it.

    Each decoder layer is one unit (gathered for its forward and again for its backward), the rest
    of the model the root unit. On CUDA the units are gathered in bf16 and gradients reduced in fp32.
    The model may sit on the CPU: each unit moves to `device` as it is sharded, so a GPU never holds
    more than one whole layer of it.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy()
    if device.type == "cuda":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    classes = _layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """Return True when `model` was sharded by `shard`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _options(*, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=strict)


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Write the trainable parameters and the optimizer state of every rank into `folder/sharded`."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options())
    save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path) -> None:
    """Load what `save_sharded` wrote into `model` and `optimizer`, resharded to this run's ranks.

    `model` and `optimizer` must be built (and sharded, in a distributed sharded run) first.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options())
    # DCP loads in place into the tensors of these (sharded as this run shards them).
    load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(checkpoint / SHARDED_DIR))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=_options(strict=False),  # the frozen base is not in it: it comes from the base model
    )


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the whole (unsharded) state dict on rank 0's CPU, {} on the other ranks."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict[str, Any] = get_model_state_dict(model, options=options)
    return state if not is_distributed() or dist.get_rank() == 0 else {}


def shared_temporary(target: Path) -> Path:
    """Return a fresh temporary directory beside `target`, made by rank 0 and named to every rank."""
    import uuid

    name = [f".tmp-{target.name}-{uuid.uuid4().hex}"]
    if is_distributed():
        dist.broadcast_object_list(name, src=0)
    tmp = target.parent / name[0]
    if not is_distributed() or dist.get_rank() == 0:
        tmp.mkdir(parents=True)
    if is_distributed():
        dist.barrier()
    return tmp
