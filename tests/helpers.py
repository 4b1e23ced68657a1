"""Helpers more than one test module (or bench) uses: training run configs and waits, stored jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai

from studio.domain.ids import new_id
from studio.ports import TrainingLauncher
from studio.schemas.jobs import Hyperparameters, Job, LaunchStatus
from studio.training import ensure_tiny_model
from studio.training.tiny_model import TINY_MODEL_NAME
from tests.api.datasets_data import chat_rows, jsonl

if TYPE_CHECKING:
    from tests.serve_fixtures import ServeApp

ENDED = frozenset({"succeeded", "failed", "stopped"})
SMALL_LORA = Hyperparameters(
    n_epochs=1,
    batch_size=1,
    learning_rate_multiplier=1.0,
    fine_tuning_method="lora",
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    lora_target_modules=["q_proj"],
)


def job_config(tmp_path: Path, *, epochs: int) -> Path:
    """Write a LoRA run's config on the tiny model (32 chat rows, batch 8) and return its path."""
    model = ensure_tiny_model(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_bytes(jsonl(chat_rows(32)))
    config = {
        "base_model": str(model),
        "training_file": str(tmp_path / "train.jsonl"),
        "output_dir": str(tmp_path / "out"),
        "method": "lora",
        "n_epochs": epochs,
        "batch_size": 8,
        "learning_rate": 0.02,
        "max_seq_len": 128,
        "checkpoint_every_steps": 2,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(config))
    return path


def events_of(logs: str) -> list[dict[str, Any]]:
    """Return the `MINISTUDIO_EVENT` lines of a run's log, parsed."""
    return [
        json.loads(line.split(" ", 1)[1])
        for line in logs.splitlines()
        if line.startswith("MINISTUDIO_EVENT ")
    ]


async def wait_until_done(launcher: TrainingLauncher, launch_id: str) -> LaunchStatus:
    """Return the run's status once it ended (120 s at most)."""
    for _ in range(600):
        status = await launcher.status(launch_id)
        if status.state in ENDED:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {launch_id} did not finish")


async def state_after_running(launcher: TrainingLauncher, launch_id: str) -> str:
    """Return the run's state once it is no longer running (or still "running" after 30 s)."""
    for _ in range(60):
        state = (await launcher.status(launch_id)).state
        if state != "running":
            return state
        await asyncio.sleep(0.5)
    return state


def stored_job(client_id: str, *, created_at: int, running: bool = False, file_id: str = "file-x") -> Job:
    """Return a one-epoch LoRA job on the tiny model, queued (or running with a Ray job), to store."""
    return Job(
        id=new_id("ftjob"),
        client_id=client_id,
        model=TINY_MODEL_NAME,
        training_file=file_id,
        validation_file=None,
        status="running" if running else "queued",
        ray_job_id=f"ray-{created_at}" if running else None,
        attempts=1 if running else 0,
        hyperparameters=SMALL_LORA,
        suffix=None,
        seed=1,
        created_at=created_at,
    )


CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid",
    "Germany": "Berlin", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
}  # fmt: skip
TINY = "mini-studio/tiny-llama"


def capitals(rows: int = 64) -> bytes:
    """A learnable mapping: each country's capital, always in the same answer shape."""
    names = list(CAPITALS)
    return jsonl([
        {"messages": [
            {"role": "user", "content": f"What is the capital of {names[i % 8]}?"},
            {"role": "assistant", "content": f"The capital of {names[i % 8]} is {CAPITALS[names[i % 8]]}."},
        ]}
        for i in range(rows)
    ])  # fmt: skip


def wait_for(
    http: httpx.Client, job_id: str, headers: dict[str, str], until: Any, timeout_s: float = 240
) -> Any:
    """Return the job (read through `http`) once `until(job)` holds; answers other than 200 (a part of
    the studio being restarted) are waited out like the rest, until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    job: Any = None
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers)
            if response.status_code == 200:
                job = response.json()
                if until(job):
                    return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


@dataclass(frozen=True)
class Tenant:
    id: str
    headers: dict[str, str]
    sdk: openai.OpenAI
    file_id: str


def new_tenant(serve_app: ServeApp, http: httpx.Client, name: str) -> Tenant:
    """Create a client with a key through the admin API, and upload the capitals file as it."""
    tenant = http.post("/admin/clients", json={"name": name}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{tenant['id']}/keys", headers=serve_app.admin).json()["secret"]
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0)
    file_id = sdk.files.create(file=("capitals.jsonl", capitals()), purpose="fine-tune").id
    return Tenant(tenant["id"], {"Authorization": f"Bearer {key}"}, sdk, file_id)
