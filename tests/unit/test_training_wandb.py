"""W&B logging of a real tiny training run (offline mode): the run's file holds every step's metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.config import WandbSettings
from studio.errors import InvalidInput
from studio.schemas.jobs import Job, WandbIntegration
from studio.services.integrations import check_integrations, wandb_env, wandb_run
from studio.training import TrainConfig
from studio.training.__main__ import EVENT_PREFIX
from tests.unit.test_training_loop import REPO, base, config, dataset
from tests.wandb_files import offline_run

pytest.importorskip("wandb")
__all__ = ["base", "dataset"]  # fixtures


def test_the_entrypoint_logs_steps_and_evaluations_to_an_offline_run(
    base: Path, dataset: Path, tmp_path: Path
) -> None:
    output = tmp_path / "job"
    wandb = {
        "project": "capitals",
        "name": "tiny",
        "tags": ["geo", "mini-studio/ftjob-w"],
        "mode": "offline",
        "run_id": "ftjob-w",
        "directory": str(output),
    }
    job = config(base, dataset, output, n_epochs=1, validation_file=dataset, eval_every_steps=4, wandb=wandb)
    path = tmp_path / "config.json"
    path.write_text(job.model_dump_json(), encoding="utf-8")
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    env.pop("WANDB_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "studio.training", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [
        json.loads(line.split(EVENT_PREFIX, 1)[1])
        for line in done.stdout.splitlines()
        if EVENT_PREFIX in line
    ]
    metrics = [e for e in events if e["type"] == "metrics"]
    steps = [e for e in metrics if "train_loss" in e]
    evals = [e for e in metrics if "valid_loss" in e]
    assert steps and evals

    (run_file,) = output.glob("wandb/offline-run-*/run-ftjob-w.wandb")
    run, history = offline_run(run_file)
    assert (run["id"], run["project"], run["name"]) == ("ftjob-w", "capitals", "tiny")
    assert run["tags"] == ["geo", "mini-studio/ftjob-w"] and run["config"]["method"] == "lora"
    logged = {row["_step"]: row for row in history}
    assert sorted(logged) == [e["step"] for e in steps]
    for event in steps:
        row = logged[event["step"]]
        assert row["train_loss"] == pytest.approx(event["train_loss"])
        assert row["learning_rate"] == pytest.approx(event["learning_rate"])
    for event in evals:  # an evaluation shares its step's row
        assert logged[event["step"]]["valid_loss"] == pytest.approx(event["valid_loss"])


def test_a_job_gets_its_run_only_when_wandb_is_configured(tmp_path: Path) -> None:
    asked = [WandbIntegration.model_validate({"type": "wandb", "wandb": {"project": "p", "entity": "team"}})]
    with pytest.raises(InvalidInput, match="STUDIO_WANDB__MODE"):
        check_integrations(asked, WandbSettings())
    with pytest.raises(InvalidInput, match="STUDIO_WANDB__API_KEY"):
        check_integrations(asked, WandbSettings(mode="online"))
    online = WandbSettings.model_validate({"mode": "online", "api_key": "k" * 40, "base_url": "https://w.b"})
    check_integrations(asked, online)
    check_integrations(None, WandbSettings())

    job = Job.model_construct(id="ftjob-1", integrations=asked)  # all `wandb_run` reads
    run = wandb_run(job, online, output_dir=tmp_path)
    assert run is not None and (run.project, run.entity, run.name, run.run_id) == (
        "p",
        "team",
        None,
        "ftjob-1",
    )
    assert run.mode == "online" and run.directory == tmp_path and "mini-studio/ftjob-1" in run.tags
    assert wandb_env(online) == {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "https://w.b"}
    assert wandb_run(job, WandbSettings(), output_dir=tmp_path) is None
    assert wandb_run(job.model_copy(update={"integrations": []}), online, output_dir=tmp_path) is None
    # The key never enters the run's config file.
    dumped = TrainConfig.model_validate(
        {"base_model": "m", "training_file": "t", "output_dir": str(tmp_path), "wandb": run.model_dump()}
    ).model_dump_json()
    assert "k" * 40 not in dumped
