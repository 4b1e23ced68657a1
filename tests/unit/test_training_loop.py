"""Real training of the tiny model on CPU: loss falls, checkpoints, stop and resume, the CLI."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from studio.training import TINY_MODEL_NAME, TrainConfig, TrainResult, ensure_tiny_model, train
from studio.training.__main__ import EVENT_PREFIX

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid",
    "Germany": "Berlin", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
}  # fmt: skip
STEP_KEYS = {
    "type", "step", "total_steps", "epoch", "train_loss", "learning_rate",
    "tokens_per_second", "trained_tokens", "eta_seconds",
}  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Named as `resolve_base_model` places it, so a job naming the tiny model finds this one.
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 rows of a fixed, learnable mapping: each country's capital, in a fixed answer shape."""
    path = tmp_path_factory.mktemp("data") / "capitals.jsonl"
    rows = []
    for i in range(64):
        country = list(CAPITALS)[i % len(CAPITALS)]
        rows.append({
            "messages": [
                {"role": "user", "content": f"What is the capital of {country}?"},
                {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."},
            ]
        })  # fmt: skip
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def config(base: Path, dataset: Path, output_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "base_model": base,
        "training_file": dataset,
        "output_dir": output_dir,
        "method": "lora",
        "n_epochs": 4,
        "batch_size": 8,
        "learning_rate": 2e-2,
        "max_seq_len": 64,
        "warmup_ratio": 0.1,
        "seed": 0,
        "device": "cpu",
    }
    return TrainConfig.model_validate(values | overrides)


def step_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "metrics" and "train_loss" in e]


def assert_loss_fell(events: list[dict[str, Any]], result: TrainResult) -> None:
    steps = step_events(events)
    first = steps[0]["train_loss"]
    last = sum(e["train_loss"] for e in steps[-4:]) / 4
    assert last < 0.6 * first, [round(e["train_loss"], 2) for e in steps]
    assert result.final_train_loss == steps[-1]["train_loss"]


def test_lora_training_learns_and_checkpoints(base: Path, dataset: Path, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    cfg = config(
        base, dataset, tmp_path, validation_file=dataset, eval_every_steps=16, checkpoint_every_steps=10
    )
    result = train(cfg, report=events.append)

    steps = step_events(events)
    assert [e["step"] for e in steps] == list(range(1, 33))  # 64 rows / 8 a batch x 4 epochs
    assert all(set(e) == STEP_KEYS and e["total_steps"] == 32 for e in steps)
    assert steps[7]["epoch"] == 1.0 and steps[-1]["epoch"] == 4.0
    assert steps[-1]["eta_seconds"] == 0 and all(e["tokens_per_second"] > 0 for e in steps)
    assert result.trained_tokens == steps[-1]["trained_tokens"] > steps[0]["trained_tokens"] > 0
    # Linear warmup (ceil(0.1 x 32) = 4 steps) up to the learning rate, then linear decay.
    rates = [e["learning_rate"] for e in steps]
    assert rates[:5] == sorted(rates[:5]) and rates[4] == pytest.approx(2e-2)
    assert rates[4:] == sorted(rates[4:], reverse=True)
    assert_loss_fell(events, result)

    valid = [e for e in events if "valid_loss" in e]
    assert [e["step"] for e in valid] == [16, 32]
    assert valid[-1]["valid_loss"] < valid[0]["valid_loss"]
    assert valid[-1]["valid_mean_token_accuracy"] > 0.5

    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [e["step"] for e in checkpoints] == [10, 20, 30]
    for event in checkpoints:
        path = Path(event["path"])
        assert path == tmp_path / "checkpoints" / f"step-{event['step']}"
        for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt"):
            assert (path / name).is_file(), name
        assert json.loads((path / "trainer_state.json").read_text())["step"] == event["step"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-10", "step-20", "step-30"]

    last_checkpoint = tmp_path / "checkpoints" / "step-30"
    loss = result.final_train_loss
    assert result == TrainResult(tmp_path / "final", 32, result.trained_tokens, loss, False, last_checkpoint)
    final = tmp_path / "final"
    assert (final / "adapter_config.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (final / name).read_bytes() == (base / name).read_bytes(), name
    adapter = load_file(final / "adapter_model.safetensors")
    assert adapter and all("lora_" in key for key in adapter)
    assert {key.split(".")[-3] for key in adapter} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_checkpoints_are_skipped_with_a_warning_while_the_disk_is_under_its_guard(
    base: Path, dataset: Path, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    # A floor of the whole disk: always under it. The run goes on and writes its final model.
    cfg = config(base, dataset, tmp_path, n_epochs=1, checkpoint_every_steps=4, min_free_percent=100)
    result = train(cfg, report=events.append)

    assert not [e for e in events if e["type"] == "checkpoint"] and not (tmp_path / "checkpoints").exists()
    warnings = [e for e in events if e["type"] == "warning"]
    assert [w["message"].split(" skipped")[0] for w in warnings] == [
        "Checkpoint at step 4",
        "Checkpoint at step 8",
    ]
    assert "under its guard" in warnings[0]["message"]
    assert result.final_path == tmp_path / "final" and result.checkpoint_path is None


def test_full_fine_tuning_learns(base: Path, dataset: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    events: list[dict[str, Any]] = []
    result = train(config(base, dataset, tmp_path, method="full", learning_rate=3e-3), report=events.append)
    assert_loss_fell(events, result)
    assert step_events(events)[-1]["train_loss"] < 1.5
    final = tmp_path / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer: Any = AutoTokenizer.from_pretrained(final)
    assert model.dtype == torch.float32 and tokenizer.chat_template
    # The saved model is the trained one: it now answers the training question.
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).startswith(
        "The capital"
    )


def test_stop_then_resume_gives_the_same_model_as_one_run(base: Path, dataset: Path, tmp_path: Path) -> None:
    # Dropout on: equality needs the RNG state, optimizer and schedule restored, and the same data order.
    common = {"n_epochs": 2, "lora_dropout": 0.1, "checkpoint_every_steps": 5}
    straight = train(config(base, dataset, tmp_path / "straight", **common))
    assert straight.steps == 16

    calls = 0

    def stop_after_seven_steps() -> bool:
        nonlocal calls
        calls += 1
        return calls > 7

    events: list[dict[str, Any]] = []
    cfg = config(base, dataset, tmp_path / "split", **common)
    stopped = train(cfg, report=events.append, should_stop=stop_after_seven_steps)
    assert stopped.stopped and stopped.steps == 7 and stopped.final_path is None
    assert stopped.checkpoint_path == tmp_path / "split" / "checkpoints" / "step-7"
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [5, 7]
    assert not (tmp_path / "split" / "final").exists()

    events.clear()
    half_written = tmp_path / "split" / "checkpoints" / ".tmp-step-9-0123"  # as a killed run leaves it
    half_written.mkdir()
    resumed = train(cfg, report=events.append)
    assert not half_written.exists()
    assert not resumed.stopped and resumed.steps == 16
    assert [e["step"] for e in step_events(events)] == list(range(8, 17))
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [10, 15]
    assert resumed.trained_tokens == straight.trained_tokens
    assert resumed.final_train_loss == pytest.approx(straight.final_train_loss, rel=1e-5)
    one = load_file(tmp_path / "straight" / "final" / "adapter_model.safetensors")
    two = load_file(tmp_path / "split" / "final" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)


def test_unusable_data_is_a_value_error(base: Path, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no example has a token to train on within max_seq_len=4"):
        train(config(base, dataset, tmp_path, max_seq_len=4))
    with pytest.raises(ValueError, match="rank 2 is out of range"):
        config(base, dataset, tmp_path, rank=2, world_size=2)
    with pytest.raises(ValueError, match="'mini-studio/tiny-llama' is not a local model directory"):
        train(config(base, dataset, tmp_path, base_model=TINY_MODEL_NAME))  # names are resolved before


def cli_command(job: dict[str, Any], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job, default=str), encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "studio.training", "--config", str(job_file)], {
        **os.environ,
        "PYTHONPATH": path,
    }


def run_cli(job: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command, env = cli_command(job, tmp_path)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False
    )


def parse_events(stdout: str) -> list[dict[str, Any]]:
    lines = stdout.splitlines()
    return [json.loads(line.removeprefix(EVENT_PREFIX)) for line in lines if line.startswith(EVENT_PREFIX)]


def test_cli_streams_events_and_exits_0(base: Path, dataset: Path, tmp_path: Path) -> None:
    cfg = config(
        base, dataset, tmp_path / "out", n_epochs=1, gradient_accumulation_steps=2,
        validation_file=dataset, eval_every_steps=2, checkpoint_every_steps=2,
        base_model=TINY_MODEL_NAME, models_dir=base.parent,
    )  # fmt: skip
    job = cfg.model_dump(mode="json")
    proc = run_cli(job, tmp_path)
    assert proc.returncode == 0, proc.stderr
    events = parse_events(proc.stdout)
    assert [e["step"] for e in step_events(events)] == [1, 2, 3, 4]  # 64 rows / (8 x 2) a step
    assert [e["step"] for e in events if "valid_loss" in e] == [2, 4]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4]
    assert events[-1]["type"] == "result" and events[-1]["steps"] == 4 and events[-1]["stopped"] is False
    assert Path(events[-1]["final_path"], "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "final" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(base)  # the name was resolved to the tiny model already under models_dir


def test_cli_exits_2_on_a_dataset_without_assistant_messages(base: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}) + "\n", encoding="utf-8")
    proc = run_cli(config(base, bad, tmp_path / "out").model_dump(mode="json"), tmp_path)
    assert proc.returncode == 2
    message = "bad.jsonl line 1: the example has no assistant message to train on"
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert parse_events(proc.stdout) == [{"type": "error", "kind": "user", "message": message}]


def test_cli_reports_an_invalid_config_as_a_user_error(base: Path, dataset: Path, tmp_path: Path) -> None:
    job = config(base, dataset, tmp_path / "out").model_dump(mode="json") | {"n_epochs": 0, "colour": "red"}
    proc = run_cli(job, tmp_path)
    assert proc.returncode == 2
    (event,) = parse_events(proc.stdout)
    assert event["type"] == "error" and event["kind"] == "user"
    assert event["message"].startswith("invalid job config: n_epochs: Input should be greater than")
    assert "colour: Extra inputs are not permitted" in event["message"] and "\n" not in event["message"]


def test_cli_reports_an_unreachable_model_hub_as_a_platform_error(
    base: Path, dataset: Path, tmp_path: Path
) -> None:
    job = config(base, dataset, tmp_path / "out", base_model="some-org/some-model", models_dir=tmp_path)
    command, env = cli_command(job.model_dump(mode="json"), tmp_path)
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env | {"HF_HUB_OFFLINE": "1"}, check=False
    )
    assert proc.returncode == 1
    (event,) = parse_events(proc.stdout)
    assert event["type"] == "error" and event["kind"] == "platform"
    assert "'some-org/some-model' is not in" in event["message"] and "cannot be reached" in event["message"]
    assert "Traceback" in proc.stderr


def test_cli_stops_on_sigterm_with_a_checkpoint(base: Path, dataset: Path, tmp_path: Path) -> None:
    # 400 steps: far more than the time the signal takes to arrive after the first step's event.
    job = config(base, dataset, tmp_path / "out", n_epochs=50).model_dump(mode="json")
    command, env = cli_command(job, tmp_path)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(EVENT_PREFIX), first
        proc.send_signal(signal.SIGTERM)
        rest, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    result = parse_events(first + rest)[-1]
    assert result["type"] == "result" and result["stopped"] is True and result["final_path"] is None
    assert 1 <= result["steps"] < 400
    assert result["checkpoint_path"] == str(tmp_path / "out" / "checkpoints" / f"step-{result['steps']}")
    assert (tmp_path / "out" / "STOP").is_file()  # for Ray Train workers in other processes


def test_a_stop_file_stops_the_run_and_a_leftover_one_is_deleted(
    base: Path, dataset: Path, tmp_path: Path
) -> None:
    stop_file = tmp_path / "out" / "STOP"
    stop_file.parent.mkdir()
    stop_file.touch()  # as a stopped run leaves it: this run must train, not stop at once
    job = config(base, dataset, tmp_path / "out", n_epochs=50).model_dump(mode="json")
    command, env = cli_command(job, tmp_path)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(EVENT_PREFIX), first
        assert not stop_file.exists()
        stop_file.touch()  # what the SIGTERM handler of a Ray Train driver does
        rest, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    result = parse_events(first + rest)[-1]
    assert result["type"] == "result" and result["stopped"] is True and 1 <= result["steps"] < 400


def test_training_package_imports_no_service_code_nor_ray() -> None:
    forbidden = ("ray", "studio.api", "studio.services", "studio.app", "studio.stores", "studio.actors")
    for source in (REPO / "studio" / "training").glob("*.py"):
        # The Ray Train launcher is the one module allowed Ray; __main__ imports it only for such runs.
        banned = [f for f in forbidden if not (source.name == "ray_train.py" and f == "ray")]
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in banned)]
            assert not bad, f"{source.name} imports {bad}"
