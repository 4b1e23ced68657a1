"""How long the tiny model takes to build (tokenizer, pretraining, save) and what it then says.

    .venv/bin/python -m bench.tiny_model_build_bench [--seed 0]

Builds `mini-studio/tiny-llama` in a fresh temporary directory, as a cluster does on first use, in a
fresh process (the pretrained weights are cached per process, so only the first build in a process
pretrains), and prints the wall time of the build and of its pretraining alone, the pretraining loss
at the start and at the end, then the base model's greedy answers (transformers `generate`) to a few
chat questions and one plain-text prompt.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = (
    "What is the capital of France?",
    "Capital of France?",
    "What is the capital of Kenya?",
    "Hello!",
    "Tell me a story.",
    "Spell river.",
    "What is your name?",  # not in the corpus: an answer from it all the same
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.training import tiny_model

    losses: list[float] = []
    pretrain = tiny_model._pretrain
    pretrain_s = 0.0

    def timed_pretrain(*a: Any, **kw: Any) -> list[float]:
        nonlocal pretrain_s
        started = time.perf_counter()
        losses.extend(pretrain(*a, **kw))
        pretrain_s = time.perf_counter() - started
        return losses

    tiny_model._pretrain = timed_pretrain
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = tiny_model.ensure_tiny_model(Path(tmp) / "tiny-llama", seed=args.seed)
        build_s = time.perf_counter() - started
        print(f"build: {build_s:.1f} s wall, of which pretraining {pretrain_s:.1f} s "
              f"({len(losses)} steps of {tiny_model.PRETRAIN_BATCH} sequences, torch threads "
              f"{torch.get_num_threads()} in the process, 1 in the pretraining)")  # fmt: skip
        first, last = losses[0], sum(losses[-20:]) / 20
        print(f"pretraining loss: {first:.2f} at the first step, {last:.2f} over the last 20")
        tokenizer: Any = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        for question in QUESTIONS:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
            print(f"{question!r} -> {generate(model, tokenizer, prompt)!r}")
        print(f"plain text: {generate(model, tokenizer, '<|bos|>The capital of France')!r}")


def generate(model: Any, tokenizer: Any, prompt: str) -> str:
    """Return the greedy continuation of `prompt` (at most 32 tokens), special tokens shown."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=32, do_sample=False)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :]))


if __name__ == "__main__":
    main()
