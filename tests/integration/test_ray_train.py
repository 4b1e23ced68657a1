"""The training entrypoint on Ray Train: two DDP workers of half a CPU each on the test cluster.

The entrypoint runs as a subprocess joining the session's Ray cluster through RAY_ADDRESS, as it does
inside a Ray job. Two workers with a batch of 8 each train exactly as one process with a batch of 8
and two accumulation steps: same examples per step (the shards interleave one shuffled order), same
loss normalisation, DDP averaging the gradients.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from studio.training import TINY_MODEL_NAME, TrainConfig, ensure_tiny_model, train
from studio.training.__main__ import EVENT_PREFIX

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid",
    "Germany": "Berlin", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
}  # fmt: skip


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_tiny_model(path / "tiny-llama")  # where the job's model name resolves to
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "capitals.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is the capital of {country}?"},
                {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."},
            ]
        }
        for i in range(64)
        for country in [list(CAPITALS)[i % len(CAPITALS)]]
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gcs_address(ray_cluster: str) -> str:
    """The cluster's GCS address, what Ray puts in RAY_ADDRESS for a job's entrypoint."""
    import ray

    address: str = ray.get_runtime_context().gcs_address
    return address


def job(models_dir: Path, dataset: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "base_model": TINY_MODEL_NAME,
        "models_dir": str(models_dir),
        "training_file": str(dataset),
        "output_dir": str(output_dir),
        "n_epochs": 4,
        "batch_size": 8,
        "learning_rate": 2e-2,
        "max_seq_len": 64,
        "warmup_ratio": 0.1,
        "lora_dropout": 0.0,  # so that the run is comparable with one process, whatever the RNGs
        "seed": 0,
        "num_workers": 2,
        "cpus_per_worker": 0.5,  # the test cluster has 2 CPUs
    }
    return values | overrides


def command(job: dict[str, Any], tmp_path: Path, gcs_address: str) -> tuple[list[str], dict[str, str]]:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "RAY_ADDRESS": gcs_address}
    return [sys.executable, "-m", "studio.training", "--config", str(job_file)], env


def events_of(output: str) -> list[dict[str, Any]]:
    """Parse events as the server does: the marker anywhere in a line, the JSON to its end."""
    return [
        json.loads(line[line.index(EVENT_PREFIX) + len(EVENT_PREFIX) :])
        for line in output.splitlines()
        if EVENT_PREFIX in line
    ]


def test_two_workers_train_like_one_process_with_accumulation(
    models_dir: Path, dataset: Path, gcs_address: str, tmp_path: Path
) -> None:
    spec = job(
        models_dir, dataset, tmp_path / "out", checkpoint_every_steps=6,
        validation_file=str(dataset), eval_every_steps=8,
    )  # fmt: skip
    argv, env = command(spec, tmp_path, gcs_address)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = events_of(proc.stdout)

    steps = [e for e in events if e["type"] == "metrics" and "train_loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 17))  # 64 rows / (2 workers x 8) x 4 epochs
    losses = [e["train_loss"] for e in steps]
    assert sum(losses[-4:]) / 4 < 0.6 * losses[0], [round(x, 2) for x in losses]
    assert [e["step"] for e in events if "valid_loss" in e] == [8, 16]
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [e["step"] for e in checkpoints] == [6, 12]
    assert Path(checkpoints[-1]["path"], "adapter_model.safetensors").is_file()
    result = events[-1]
    assert result["type"] == "result" and result["stopped"] is False and result["steps"] == 16
    assert result["final_path"] == str(tmp_path / "out" / "final")
    assert Path(result["final_path"], "adapter_model.safetensors").is_file()
    assert Path(result["final_path"], "tokenizer.json").is_file()
    # The tokens of both ranks are counted, every step's metrics come once, in order, before the result.
    assert result["trained_tokens"] == steps[-1]["trained_tokens"]
    assert [e["type"] for e in events].count("result") == 1

    one = TrainConfig.model_validate(
        spec | {"base_model": str(models_dir / "tiny-llama"), "output_dir": str(tmp_path / "one")}
        | {"num_workers": 1, "gradient_accumulation_steps": 2}
    )  # fmt: skip
    single: list[dict[str, Any]] = []
    alone = train(one, report=single.append)
    assert alone.trained_tokens == result["trained_tokens"]
    single_losses = [e["train_loss"] for e in single if "train_loss" in e]
    assert losses == pytest.approx(single_losses, rel=1e-4)
    ours = load_file(tmp_path / "out" / "final" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "one" / "final" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-4) for k in ours)
    print(f"2-worker Ray Train run: {elapsed:.1f} s")


def test_a_user_error_in_the_workers_exits_2_with_a_user_error_event(
    models_dir: Path, gcs_address: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}) + "\n", encoding="utf-8")
    argv, env = command(job(models_dir, bad, tmp_path / "out"), tmp_path, gcs_address)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = "bad.jsonl line 1: the example has no assistant message to train on"
    assert events_of(proc.stdout) == [{"type": "error", "kind": "user", "message": message}]
    assert f"error: {message}" in proc.stderr


def test_sigterm_stops_every_worker_at_the_same_step_with_a_checkpoint(
    models_dir: Path, dataset: Path, gcs_address: str, tmp_path: Path
) -> None:
    # 400 steps: far more than the time the signal takes to reach the workers through the STOP file.
    argv, env = command(job(models_dir, dataset, tmp_path / "out", n_epochs=100), tmp_path, gcs_address)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first step's metrics: the workers are training
        assert EVENT_PREFIX in first, first
        proc.send_signal(signal.SIGTERM)
        rest, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors[-3000:]
    events = events_of(first + rest)
    result = events[-1]
    assert result["type"] == "result" and result["stopped"] is True and result["final_path"] is None
    assert 1 <= result["steps"] < 400
    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{result['steps']}"
    assert result["checkpoint_path"] == str(checkpoint) and (checkpoint / "trainer_state.json").is_file()
    assert [e for e in events if e["type"] == "checkpoint"] == [
        {"type": "checkpoint", "step": result["steps"], "path": str(checkpoint)}
    ]
    assert (tmp_path / "out" / "STOP").is_file() and not (tmp_path / "out" / "final").exists()
