"""DPO in the project's loop: preference batches and loss checked against TRL's, real training on CPU.

TRL (PyPI `trl`, a dev extra) is the reference implementation: its own tokenization and collator
build a batch from the same rows, and its `DPOTrainer._compute_loss` scores it with the same policy
and reference models; ours must give the same ids, masks, loss and rewards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from studio.training import TrainConfig, ensure_tiny_model, train
from studio.training.data import IGNORE_INDEX
from studio.training.dpo import (
    REFERENCE_FILE,
    REWARD_METRICS,
    collate_pairs,
    dpo_loss,
    load_preferences,
    sequence_logps,
    tokenize_preference,
)

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid",
    "Germany": "Berlin", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
}  # fmt: skip
TWO_ROWS: list[dict[str, Any]] = [
    {
        "input": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        "preferred_output": [{"role": "assistant", "content": "Paris."}],
        "non_preferred_output": [{"role": "assistant", "content": "It is Rome, I think."}],
    },
    {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of Japan?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Tokyo is the capital of Japan."}],
        "non_preferred_output": [{"role": "assistant", "content": "Osaka."}],
    },
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def preferences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 pairs: each country's capital preferred over the next country's, in the same answer shape."""
    countries = list(CAPITALS)
    rows = []
    for i in range(64):
        country, other = countries[i % 8], countries[(i + 1) % 8]
        rows.append({
            "input": {"messages": [{"role": "user", "content": f"What is the capital of {country}?"}]},
            "preferred_output": [
                {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."}
            ],
            "non_preferred_output": [
                {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[other]}."}
            ],
        })  # fmt: skip
    path = tmp_path_factory.mktemp("data") / "preferences.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# -- batching ----------------------------------------------------------------------------------


def test_a_pair_masks_the_prompt_and_batches_chosen_before_rejected(tokenizer: Any) -> None:
    pairs = [tokenize_preference(row, tokenizer, 128) for row in TWO_ROWS]
    prompt = tokenizer.apply_chat_template(
        TWO_ROWS[0]["input"]["messages"], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for side, text in ((pairs[0].chosen, "Paris."), (pairs[0].rejected, "It is Rome, I think.")):
        # Both sides start with the same prompt, which is never scored; the reply and its EOS are.
        assert side.input_ids[: len(prompt_ids)] == prompt_ids
        assert set(side.labels[: len(prompt_ids)]) == {IGNORE_INDEX}
        scored = side.labels[len(prompt_ids) :]
        assert scored == side.input_ids[len(prompt_ids) :] and scored[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(scored, skip_special_tokens=True) == text

    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    sides = [pairs[0].chosen, pairs[1].chosen, pairs[0].rejected, pairs[1].rejected]
    width = max(side.num_tokens for side in sides)
    assert batch["input_ids"].shape == batch["labels"].shape == (4, width)
    for row, side in enumerate(sides):
        n = side.num_tokens
        assert batch["input_ids"][row, :n].tolist() == side.input_ids
        assert batch["labels"][row, :n].tolist() == side.labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert set(batch["input_ids"][row, n:].tolist()) <= {tokenizer.pad_token_id}
        assert set(batch["labels"][row, n:].tolist()) <= {IGNORE_INDEX}


def test_a_row_that_is_not_a_preference_is_refused_with_its_line(tokenizer: Any, tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    with pytest.raises(ValueError, match="this row is a chat example"):
        tokenize_preference(chat, tokenizer, 64)
    with pytest.raises(ValueError, match="this row is a prompt/completion example"):
        tokenize_preference({"prompt": "a", "completion": "b"}, tokenizer, 64)
    broken = {**TWO_ROWS[0], "non_preferred_output": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValueError, match='"non_preferred_output" must be a non-empty array of assistant'):
        tokenize_preference(broken, tokenizer, 64)
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(TWO_ROWS[0]) + "\n" + json.dumps(chat) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mixed\.jsonl line 2: DPO trains on preference examples"):
        load_preferences(path, tokenizer, 64)
    # A pair one of whose sides is cut to nothing scored is dropped; none left is an error.
    path.write_text(json.dumps(TWO_ROWS[0]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no example has a token to train on within max_seq_len=8"):
        load_preferences(path, tokenizer, 8)


# -- against TRL -------------------------------------------------------------------------------


def trl_trainer(base: Path, tokenizer: Any, tmp_path: Path, *, lora: bool, beta: float) -> Any:
    """Return TRL's DPOTrainer on the tiny model, its policy moved away from its reference."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    def model() -> Any:
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)

    rows = [
        {
            "prompt": r["input"]["messages"],
            "chosen": r["preferred_output"],
            "rejected": r["non_preferred_output"],
        }
        for r in TWO_ROWS
    ]
    args = DPOConfig(
        output_dir=str(tmp_path), beta=beta, report_to=[], use_cpu=True, precompute_ref_log_probs=False
    )
    # LoRA: TRL wraps the model in a new adapter, whose reference is the model with adapters disabled.
    trainer = DPOTrainer(
        model=model(),
        ref_model=None if lora else model(),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0) if lora else None,
    )
    # At the start policy == reference and every log-ratio is 0; move the trained weights.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return trainer


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_batch_loss_and_rewards_equal_trl(base: Path, tokenizer: Any, tmp_path: Path, lora: bool) -> None:
    beta = 0.3
    trainer = trl_trainer(base, tokenizer, tmp_path, lora=lora, beta=beta)
    theirs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TWO_ROWS))])
    ours = collate_pairs(
        [tokenize_preference(row, tokenizer, 128) for row in TWO_ROWS], tokenizer.pad_token_id
    )
    # The same batch: ids, padding, and the scored positions (TRL's completion mask, our labels).
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"], ours["attention_mask"])
    assert torch.equal(theirs["completion_mask"], (ours["labels"] != IGNORE_INDEX).long())

    trainer.model.train()
    trl_loss = float(trainer._compute_loss(trainer.model, theirs, return_outputs=False).detach())
    trl_metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}

    device, n = torch.device("cpu"), len(TWO_ROWS)
    with torch.no_grad():
        policy = sequence_logps(trainer.model, ours, device)
        if lora:  # the reference is the same model with its adapter disabled
            with trainer.model.disable_adapter():
                reference = sequence_logps(trainer.model, ours, device)
        else:
            reference = sequence_logps(trainer.ref_model, ours, device)
    terms = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta=beta)
    chosen, rejected = terms.chosen_rewards, terms.rejected_rewards
    assert abs(float(terms.losses.mean()) - trl_loss) < 1e-6
    assert abs(trl_loss - math.log(2)) > 1e-3  # not the trivial loss of policy == reference
    # A reward is beta x the difference of two fp32 sums of log-probs (of magnitude up to ~100 here),
    # summed in another order by TRL's tiled LM head: they agree to the sums' rounding, ~1e-5.
    assert float(chosen.mean()) == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
    assert float(rejected.mean()) == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-5)
    assert float((chosen - rejected).mean()) == pytest.approx(trl_metrics["rewards/margins"], abs=1e-5)
    assert float((chosen > rejected).float().mean()) == trl_metrics["rewards/accuracies"]


# -- training ----------------------------------------------------------------------------------


def dpo_config(base: Path, data: Path, output_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "base_model": base,
        "training_file": data,
        "output_dir": output_dir,
        "objective": "dpo",
        "beta": 0.1,
        "method": "lora",
        "n_epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "max_seq_len": 64,
        "seed": 0,
        "device": "cpu",
    }
    return TrainConfig.model_validate(values | overrides)


def dpo_steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "metrics" and "train_loss" in e]


@pytest.mark.parametrize(("method", "learning_rate"), [("lora", 1e-2), ("full", 1e-3)], ids=["lora", "full"])
def test_dpo_training_learns_the_preference(
    base: Path, preferences: Path, tmp_path: Path, method: str, learning_rate: float
) -> None:
    events: list[dict[str, Any]] = []
    cfg = dpo_config(
        base, preferences, tmp_path, method=method, learning_rate=learning_rate, validation_file=preferences
    )
    result = train(cfg, report=events.append)

    steps = dpo_steps(events)
    assert [e["step"] for e in steps] == list(range(1, 17))  # 64 pairs / 8 a batch x 2 epochs
    for event in steps:
        values = [event["train_loss"], *(event[name] for name in REWARD_METRICS)]
        assert all(math.isfinite(v) for v in values), event
        assert event["rewards/margins"] == pytest.approx(event["rewards/chosen"] - event["rewards/rejected"])
        assert 0 <= event["rewards/accuracies"] <= 1
    # Step 1 starts from the reference itself: every log-ratio is 0 and the loss is log 2.
    assert steps[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(steps[0]["rewards/margins"]) < 1e-4
    late = steps[-4:]
    assert sum(e["train_loss"] for e in late) / 4 < 0.9 * math.log(2), [
        round(e["train_loss"], 3) for e in steps
    ]
    assert sum(e["rewards/accuracies"] for e in late) / 4 > 0.5
    assert sum(e["rewards/margins"] for e in late) > 0
    assert result.final_train_loss == steps[-1]["train_loss"] and result.trained_tokens > 0

    (valid,) = [e for e in events if "valid_loss" in e]
    assert valid["step"] == 16 and valid["valid_loss"] < math.log(2)
    assert valid["valid_rewards/accuracies"] > 0.5 and valid["valid_rewards/margins"] > 0
    final = tmp_path / "final"
    assert (final / ("adapter_config.json" if method == "lora" else "config.json")).is_file()


def test_full_dpo_resumes_with_its_reference(base: Path, preferences: Path, tmp_path: Path) -> None:
    common = {"method": "full", "learning_rate": 1e-3, "checkpoint_every_steps": 4}
    straight = train(dpo_config(base, preferences, tmp_path / "straight", **common))
    calls = 0

    def stop_after_five_steps() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    cfg = dpo_config(base, preferences, tmp_path / "split", **common)
    stopped = train(cfg, should_stop=stop_after_five_steps)
    assert stopped.stopped and stopped.steps == 5 and stopped.checkpoint_path is not None
    # The reference log-probs of the base travel with the checkpoint: the resumed weights are not the base.
    reference = torch.load(stopped.checkpoint_path / REFERENCE_FILE, weights_only=True)
    assert reference["train"].shape == (64, 2) and reference["valid"].shape == (0, 2)
    resumed = train(cfg)
    assert resumed.steps == straight.steps == 16
    assert resumed.final_train_loss == pytest.approx(straight.final_train_loss, rel=1e-4)
    one = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    two = load_file(tmp_path / "split" / "final" / "model.safetensors")
    assert one.keys() == two.keys()
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


def test_a_supervised_dataset_fails_a_dpo_run_as_a_user_error(base: Path, tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(chat) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"chat\.jsonl line 1: DPO trains on preference examples"):
        train(dpo_config(base, data, tmp_path / "out"))
