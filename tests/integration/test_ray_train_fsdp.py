"""FSDP2 on Ray Train: two gloo workers train a random 20M-parameter Llama like one process does.

The model: hidden 512, 6 layers, MLP 1376, vocabulary 1024 (the tiny tokenizer's), untied: 20.1M
parameters, random weights (`build_random_llama`). Two FSDP workers with 4 rows each train exactly as
one process with 4 rows and two accumulation steps (the same rows a step, the same loss
normalisation; FSDP's reduce-scatter averages what DDP's all-reduce would), so the loss curves agree
to float rounding: within a relative 1e-4 over 8 steps (seen: ~2e-6). The sharded checkpoint of step 4
(DCP, each worker's shards) resumes on one process (no process group) and on two workers, and both
continue the curve of the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from studio.training import TrainConfig, train
from studio.training.tiny_model import build_random_llama
from tests.integration.test_ray_train import command, events_of

pytestmark = pytest.mark.integration

SIZES = {
    "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 6, "num_attention_heads": 8,
    "num_key_value_heads": 8, "max_position_embeddings": 256,
}  # fmt: skip
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fsdp") / "llama-20m"
    build_random_llama(path, SIZES, seed=0)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sums.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]
        }
        for i in range(32)
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gcs_address(ray_cluster: str) -> str:
    import ray

    address: str = ray.get_runtime_context().gcs_address
    return address


def spec(model_dir: Path, dataset: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "base_model": str(model_dir),
        "training_file": str(dataset),
        "output_dir": str(output_dir),
        "method": "full",
        "sharding": "fsdp",
        "n_epochs": 2,  # 32 rows / (2 workers x 4) = 4 steps an epoch
        "batch_size": 4,
        "learning_rate": 1e-4,
        "max_seq_len": 64,
        "seed": 0,
        "checkpoint_every_steps": 4,
        "num_workers": 2,
        "cpus_per_worker": 0.5,  # the test cluster has 2 CPUs
    }
    return values | overrides


def on_ray(job: dict[str, Any], tmp_path: Path, gcs_address: str) -> list[dict[str, Any]]:
    argv, env = command(job, tmp_path, gcs_address)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return events_of(proc.stdout)


def one_process(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train `job` in this process, without Ray or a process group (one rank, two micro-batches)."""
    config = TrainConfig.model_validate(job | {"num_workers": 1, "gradient_accumulation_steps": 2})
    events: list[dict[str, Any]] = []
    train(config, report=events.append)
    return events


def losses(events: list[dict[str, Any]]) -> dict[int, float]:
    return {e["step"]: e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e}


def test_fsdp_on_two_workers_trains_like_one_process_and_resumes_on_one_or_two(
    model_dir: Path, dataset: Path, gcs_address: str, tmp_path: Path
) -> None:
    job = spec(model_dir, dataset, tmp_path / "two")
    two = on_ray(job, tmp_path, gcs_address)
    curve = losses(two)
    assert list(curve) == list(range(1, 9))
    assert curve[8] < curve[1]
    checkpoint = tmp_path / "two" / "checkpoints" / "step-4"
    assert [e["path"] for e in two if e["type"] == "checkpoint"] == [
        str(checkpoint), str(tmp_path / "two" / "checkpoints" / "step-8")
    ]  # fmt: skip
    # Sharded: one DCP file per worker, no whole copy of the weights.
    assert sorted(p.name for p in (checkpoint / "sharded").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert not list(checkpoint.glob("*.safetensors"))
    assert json.loads((checkpoint / "trainer_state.json").read_text())["sharding"] == "fsdp"
    result = two[-1]
    assert result["type"] == "result" and result["steps"] == 8 and not result["stopped"]

    alone = losses(one_process(spec(model_dir, dataset, tmp_path / "one")))
    assert list(alone.values()) == pytest.approx(list(curve.values()), rel=TOLERANCE)
    # The final model is written whole, in the base's layout, and equal to the single process's.
    ours = load_file(tmp_path / "two" / "final" / "model.safetensors")
    theirs = load_file(tmp_path / "one" / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys() and len(ours) == 6 * 9 + 3
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)

    for name in ("resumed-one", "resumed-two"):
        shutil.copytree(checkpoint, tmp_path / name / "checkpoints" / "step-4")
    resumed_one = losses(one_process(spec(model_dir, dataset, tmp_path / "resumed-one")))
    resumed_two = losses(on_ray(spec(model_dir, dataset, tmp_path / "resumed-two"), tmp_path, gcs_address))
    expected = [curve[step] for step in range(5, 9)]
    assert list(resumed_one) == list(resumed_two) == [5, 6, 7, 8]
    assert list(resumed_one.values()) == pytest.approx(expected, rel=TOLERANCE)
    assert list(resumed_two.values()) == pytest.approx(expected, rel=TOLERANCE)
