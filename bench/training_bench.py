"""Training throughput of the entrypoint vs a plain transformers + peft loop, in one run.

    .venv/bin/python -m bench.training_bench [--rows 512] [--epochs 3] [--batch-size 8] [--rounds 3]

Both train LoRA adapters (r=8, alpha=16, dropout 0.05 on q/k/v/o) of the tiny Llama on the same
tokenized chat rows, in the same batches (same order), with AdamW, a linear schedule, gradient
clipping at 1.0 and the same number of torch threads, on the CPU. Tokens per second count the
non-padding tokens of every batch over the time spent in training steps (batch assembly, forward,
backward, clipping, optimizer and schedule) after the first step (warm-up), the definition of the
entrypoint's `tokens_per_second`:
for the entrypoint it is the value of its last step's metrics event (`python -m studio.training` as
a subprocess), for the plain loop it is measured the same way in this process. Start-up (imports,
model load, tokenization) and the final save are outside both figures; the entrypoint's wall time is
printed apart. Rounds alternate the two; the machine's other load shows up as spread between rounds,
so the ratio of the best rounds is printed beside the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from studio.training import ensure_tiny_model
from studio.training.__main__ import EVENT_PREFIX
from studio.training.data import Example, epoch_steps, load_dataset
from studio.training.loop import disable_progress_bars

LEARNING_RATE = 1e-3
SEED = 0
_WORDS = str.split("apple river mountain forest ocean garden window music story morning winter summer")


def write_dataset(path: Path, rows: int) -> None:
    """Write `rows` chat examples of two to three turns (about 60 to 150 tokens each)."""
    lines = []
    for i in range(rows):
        a, b = _WORDS[i % len(_WORDS)], _WORDS[(i * 7 + 3) % len(_WORDS)]
        messages = [
            {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
            {"role": "user", "content": f"Row {i}: tell me about the {a} and the {b}."},
            {"role": "assistant", "content": f"The {a} and the {b} are number {i} and {i * 13 % 100}."},
        ]
        if i % 2:
            messages += [
                {"role": "user", "content": f"Spell {a}, then repeat {b} twice."},
                {"role": "assistant", "content": f"{' '.join(a)}. {b} {b}."},
            ]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def entrypoint_run(
    *,
    model: Path,
    dataset: Path,
    output_dir: Path,
    epochs: int,
    batch_size: int,
    max_seq_len: int,
    threads: int,
) -> tuple[float, int, float]:
    """Return (tokens/s, steps, wall seconds) of `python -m studio.training` on the job."""
    job = {
        "base_model": str(model),
        "training_file": str(dataset),
        "output_dir": str(output_dir),
        "method": "lora",
        "n_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": LEARNING_RATE,
        "max_seq_len": max_seq_len,
        "seed": SEED,
        "device": "cpu",
    }
    job_file = output_dir.with_suffix(".json")
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "studio.training", "--config", str(job_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the entrypoint exited {proc.returncode}: {proc.stderr[-2000:]}")
    lines = proc.stdout.splitlines()
    events = [json.loads(line.split(EVENT_PREFIX, 1)[1]) for line in lines if EVENT_PREFIX in line]
    steps = [e for e in events if e["type"] == "metrics" and "train_loss" in e]
    return float(steps[-1]["tokens_per_second"]), len(steps), wall


def _pad(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(e.num_tokens for e in examples)

    def rows(field: str, fill: int) -> torch.Tensor:
        return torch.tensor([getattr(e, field) + [fill] * (width - e.num_tokens) for e in examples])

    return {
        "input_ids": rows("input_ids", pad_id),
        "attention_mask": rows("attention_mask", 0),
        "labels": rows("labels", -100),
    }


def plain_run(*, model_path: Path, dataset: Path, epochs: int, batch_size: int, max_seq_len: int) -> float:
    """Return tokens/s of a bare transformers + peft loop over the same batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
    examples = load_dataset(dataset, tokenizer, max_seq_len)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    torch.manual_seed(SEED)
    model: Any = get_peft_model(base, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    schedule = [epoch_steps(len(examples), batch_size, 1, 1, 0, SEED, epoch) for epoch in range(epochs)]
    total = sum(len(steps) for steps in schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total - step) / total))
    tokens, busy, first = 0, 0.0, True
    for steps in schedule:
        for (indices,) in steps:  # one micro-batch a step: no accumulation
            started = time.perf_counter()
            batch = _pad([examples[i] for i in indices], tokenizer.pad_token_id)
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if not first:  # the first step is left out, as the entrypoint does
                busy += time.perf_counter() - started
                tokens += int(batch["attention_mask"].sum())
            first = False
    return tokens / busy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    disable_progress_bars()

    root = Path(tempfile.mkdtemp(prefix="training-bench-"))
    model = ensure_tiny_model(root / "tiny-llama")
    dataset = root / "train.jsonl"
    write_dataset(dataset, args.rows)
    shape = dict(epochs=args.epochs, batch_size=args.batch_size, max_seq_len=args.max_seq_len)
    print(
        f"tiny Llama, LoRA, {args.rows} rows x {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.threads} torch threads, CPU"
    )
    ratios, ours_all, plain_all = [], [], []
    for round_no in range(1, args.rounds + 1):
        plain = plain_run(model_path=model, dataset=dataset, **shape)
        ours, steps, wall = entrypoint_run(
            model=model, dataset=dataset, output_dir=root / f"out-{round_no}", threads=args.threads, **shape
        )
        ratios.append(ours / plain)
        ours_all.append(ours)
        plain_all.append(plain)
        print(
            f"round {round_no}: entrypoint {ours:9.0f} tokens/s ({steps} steps, {wall:5.1f} s wall)   "
            f"plain loop {plain:9.0f} tokens/s   ratio {ours / plain:5.3f}x"
        )
    print(f"median ratio entrypoint / plain loop: {statistics.median(ratios):.3f}x (goal >= 0.95x)")
    # Other load on the machine only ever slows a round down: the best rounds are the least disturbed.
    best = max(ours_all) / max(plain_all)
    print(f"best entrypoint {max(ours_all):.0f} / best plain loop {max(plain_all):.0f} tokens/s: {best:.3f}x")


if __name__ == "__main__":
    main()
