"""Per-worker memory of parameters + gradients + optimizer state: FSDP vs DDP on 2 CPU workers (gloo).

One run of each layout on the same random Llama (default: hidden 512, 8 layers, MLP 1376: 26M
parameters, full fine-tune, fp32, AdamW): the studio's own `Run` (`studio.training.run`) is set up
on two processes with a gloo process group, trains one step (forward, backward, optimizer step),
and each worker adds up the bytes it holds locally (a sharded parameter counts its local shard):
parameters, gradients (just before the optimizer step) and AdamW's state (after it). Printed side
by side with the planner's figure for the same layout (`studio.domain.estimate`, state part only).

    .venv/bin/python -m bench.sharding_bench
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = {
    "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8,
    "num_key_value_heads": 8, "max_position_embeddings": 256,
}  # fmt: skip
MIB = 1024**2


def _local_bytes(tensor: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def _worker(rank: int, world: int, sharding: str, root: str, port: int, out: Any) -> None:
    from studio.training.config import TrainConfig
    from studio.training.data import collate
    from studio.training.supervised import SupervisedRun, _forward

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    config = TrainConfig(
        base_model=str(Path(root) / "model"), training_file=Path(root) / "data.jsonl",
        output_dir=Path(root) / sharding, method="full", sharding=sharding,  # type: ignore[arg-type]
        batch_size=2, max_seq_len=64, rank=rank, world_size=world,
    )  # fmt: skip
    run = SupervisedRun(config, None)
    run.setup()
    params = sum(_local_bytes(p) for p in run.model.parameters())
    batch = collate(run.train_set[rank * 2 : rank * 2 + 2], run.pad_id)
    loss, _, _ = _forward(run.model, batch, run.device)
    loss.backward()
    grads = sum(_local_bytes(p.grad) for p in run.model.parameters() if p.grad is not None)
    run.optimizer.step()
    state = sum(
        _local_bytes(v)
        for s in run.optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    out.put({"rank": rank, "sharding": sharding, "params": params, "grads": grads, "optimizer": state})
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=29561)
    args = parser.parse_args()
    from studio.domain.estimate import Device, Layout, TrainingPlan, estimate_layout, shape_from_config
    from studio.training.tiny_model import build_random_llama

    with tempfile.TemporaryDirectory() as root:
        build_random_llama(Path(root) / "model", SIZES, seed=0)
        config = json.loads((Path(root) / "model" / "config.json").read_text())
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"Count to {i}."},
                    {"role": "assistant", "content": "1 2 3"},
                ]
            }
            for i in range(8)
        ]
        (Path(root) / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        context = mp.get_context("spawn")
        results: list[dict[str, Any]] = []
        for k, sharding in enumerate(("ddp", "fsdp")):
            out = context.Queue()
            mp.start_processes(
                _worker, args=(2, sharding, root, args.port + k, out), nprocs=2, start_method="spawn"
            )
            results += [out.get() for _ in range(2)]
    shape = shape_from_config(config)
    plan = TrainingPlan(
        method="full", precision="fp32", sequence_length=64, batch_size=2, dataset_tokens=1, epochs=1
    )
    cpu = Device("cpu", 64 * 1024**3, 1.0)
    print(f"model: {shape.parameters / 1e6:.1f}M parameters, full fine-tune, fp32 AdamW, 2 gloo workers")
    print(
        f"{'layout':<6} {'rank':>4} {'params MiB':>11} {'grads MiB':>10} {'optim MiB':>10} {'total MiB':>10}"
    )
    totals: dict[str, float] = {}
    for r in sorted(results, key=lambda r: (r["sharding"], r["rank"])):
        total = (r["params"] + r["grads"] + r["optimizer"]) / MIB
        totals[r["sharding"]] = max(totals.get(r["sharding"], 0.0), total)
        print(
            f"{r['sharding']:<6} {r['rank']:>4} {r['params'] / MIB:>11.1f} {r['grads'] / MIB:>10.1f} "
            f"{r['optimizer'] / MIB:>10.1f} {total:>10.1f}"
        )
    for sharding in ("ddp", "fsdp"):
        e = estimate_layout(shape, plan, cpu, Layout(2, sharding, False, 2))  # type: ignore[arg-type]
        state = (e.memory_per_worker_bytes - e.activation_bytes) / MIB
        note = "state; DDP buckets, FSDP gathered units included"
        print(f"planner, {sharding}: {state:.1f} MiB a worker ({note})")
    print(f"fsdp / ddp, measured per worker: {totals['fsdp'] / totals['ddp']:.2f}")


if __name__ == "__main__":
    main()
