"""The training entrypoint's loop on a CUDA GPU in bf16: tokens/s and peak memory against the estimate.

    python -m bench.cuda_training [--shape tinyllama-1.1b] [--methods lora,full] [--seq-len 1024]
        [--batch-size 8] [--steps 30] [--accelerator auto] [--device cuda] [--json out.json]

Builds a Llama of a realistic shape with random weights (the tiny model's tokenizer, the shape's full
vocabulary), writes chat rows long enough that every example is cut at `--seq-len`, and runs
`studio.training.loop.train` (the code `python -m studio.training` runs in each Ray Train worker) for
each method on `cuda`: LoRA over a bf16 base, full fine-tuning with fp32 master weights under bf16
autocast. Needs torch, transformers and peft, not Ray, so it runs on a GPU machine without the
cluster. Printed per method:
- tokens/s: steady state, tokens of the steps after the first `--warmup` over the time between
  their metrics events; beside it the entrypoint's own cumulative figure (its last event);
- peak GPU memory: `torch.cuda.max_memory_allocated` (tensors) and `max_memory_reserved` (the caching
  allocator's pool, what another process cannot use);
- the estimate (`studio.domain.estimate`) for the same shape, method, sequence, batch and GPU kind:
  memory per worker and tokens/s implied by its wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.model_shapes import SHAPES
from studio.domain.estimate import ACCELERATORS, GIB, TrainingPlan, estimate, shape_from_config
from studio.training.config import TrainConfig
from studio.training.data import load_dataset
from studio.training.loop import disable_progress_bars, train
from studio.training.tiny_model import build_random_llama

_WORDS = str.split("apple river mountain forest ocean garden window music story morning winter summer light")


def write_dataset(path: Path, rows: int, words: int) -> None:
    """Write `rows` chat rows whose assistant reply has `words` words (cut at the sequence length)."""
    lines = []
    for i in range(rows):
        reply = " ".join(_WORDS[(i + k * 7) % len(_WORDS)] for k in range(words))
        messages = [
            {"role": "user", "content": f"Row {i}: tell me a long story."},
            {"role": "assistant", "content": reply},
        ]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_method(model: Path, data: Path, out: Path, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train `method` for `args.steps` steps; return the measured and estimated figures."""
    config = TrainConfig(
        base_model=str(model), training_file=data, output_dir=out / method, method=method,
        n_epochs=1, batch_size=args.batch_size, learning_rate=1e-4, max_seq_len=args.seq_len,
        lora_r=args.lora_r, lora_alpha=2 * args.lora_r, device=args.device,
    )  # fmt: skip
    events: list[tuple[float, dict[str, Any]]] = []
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    result = train(config, report=lambda event: events.append((time.monotonic(), event)))
    wall = time.monotonic() - started
    steps = [(t, e) for t, e in events if "train_loss" in e]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    examples = load_dataset(data, tokenizer, args.seq_len)
    tokens_per_step = args.batch_size * sum(x.num_tokens for x in examples) / len(examples)
    (t0, _), (t1, _) = steps[args.warmup - 1], steps[-1]
    steady = tokens_per_step * (len(steps) - args.warmup) / (t1 - t0)
    shape = shape_from_config(json.loads((model / "config.json").read_text()))
    plan = TrainingPlan(
        method=method, precision="bf16", sequence_length=args.seq_len, batch_size=args.batch_size,  # type: ignore[arg-type]
        dataset_tokens=int(tokens_per_step * len(steps)), epochs=1, lora_rank=args.lora_r,
    )  # fmt: skip
    guess = estimate(shape, plan, ACCELERATORS[args.accelerator], max_workers=1)
    return {
        "method": method,
        "parameters": shape.parameters,
        "steps": result.steps,
        "first_loss": steps[0][1]["train_loss"],
        "last_loss": steps[-1][1]["train_loss"],
        "tokens_per_step": tokens_per_step,
        "steady_tokens_per_s": round(steady),
        "entrypoint_tokens_per_s": round(steps[-1][1]["tokens_per_second"]),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2) if cuda else None,
        "estimate_memory_gib": round(guess.memory_per_worker_bytes / GIB, 2),
        "estimate_tokens_per_s": round(plan.dataset_tokens / guess.wall_time_s),
        "wall_s_incl_load_and_save": round(wall, 1),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama-1.1b")
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--accelerator", default="auto", choices=["auto", *sorted(ACCELERATORS)])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here (--device cpu with --shape smoke tries the script on a CPU)")
    disable_progress_bars()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    if args.accelerator == "auto":  # the known kind named in the GPU's name, else the H100's figures
        args.accelerator = next((kind for kind in ACCELERATORS if kind in gpu), "H100")
    print(f"device: {gpu} (estimated as {args.accelerator}), torch {torch.__version__}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        build_random_llama(root / "model", SHAPES[args.shape], dtype="bfloat16")
        print(f"built {args.shape} with random weights in {time.monotonic() - t0:.0f} s", flush=True)
        write_dataset(root / "train.jsonl", args.steps * args.batch_size, words=args.seq_len)
        for method in args.methods.split(","):
            figures = run_method(root / "model", root / "train.jsonl", root / "runs", method, args)
            print(json.dumps(figures), flush=True)
            results.append(figures)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"shape": args.shape, "args": vars(args) | {"json": None}, "gpu": gpu, "results": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
