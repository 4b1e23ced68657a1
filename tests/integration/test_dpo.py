"""DPO as users run it, through the `openai` SDK and Serve's proxy: upload preference data, train a DPO
job (a Ray job running the project's loop), read its DPO metrics in the events, deploy it and chat.
And DPO on two Ray Train workers, which must train as one process with gradient accumulation.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from studio.training import TrainConfig, ensure_tiny_model, train
from tests.helpers import CAPITALS, TINY, wait_for
from tests.integration.conftest import ServeApp
from tests.integration.test_ray_train import command, events_of
from tests.integration.test_serving import QUESTION, tenant, wait_deployment

pytestmark = pytest.mark.integration
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def preferences(rows: int = 32) -> bytes:
    """Each country's capital preferred over the next country's, in the same answer shape."""
    names = list(CAPITALS)
    lines = []
    for i in range(rows):
        country, other = names[i % 8], names[(i + 1) % 8]
        right = f"The capital of {country} is {CAPITALS[country]}."
        wrong = f"The capital of {country} is {CAPITALS[other]}."
        lines.append({
            "input": {"messages": [{"role": "user", "content": f"What is the capital of {country}?"}]},
            "preferred_output": [{"role": "assistant", "content": right}],
            "non_preferred_output": [{"role": "assistant", "content": wrong}],
        })  # fmt: skip
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_a_dpo_job_trains_reports_rewards_deploys_and_chats(serve_app: ServeApp, http: httpx.Client) -> None:
    key, headers = tenant(http, serve_app, "dpo")
    sdk = openai.OpenAI(api_key=key, base_url=f"{serve_app.url}/v1", max_retries=0, timeout=300)
    uploaded = sdk.files.create(file=("preferences.jsonl", preferences()), purpose="fine-tune")
    assert uploaded.model_dump()["details"]["format"] == "preference"

    # A preference file is no supervised training data: refused at creation, naming file and method.
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.fine_tuning.jobs.create(model=TINY, training_file=uploaded.id)
    assert refused.value.body["code"] == "file_format_mismatch"  # type: ignore[index]
    assert uploaded.id in refused.value.message and "supervised" in refused.value.message

    hyperparameters = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 50, "beta": 0.2}
    job = sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=uploaded.id,
        method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
        suffix="dpo",
    )
    assert job.method is not None and job.method.type == "dpo" and job.method.dpo is not None
    assert job.method.dpo.hyperparameters is not None and job.method.dpo.hyperparameters.beta == 0.2

    done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"), 600)
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 32 // 8 * 2

    events = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    steps = sorted(
        (e.data for e in events if e.type == "metrics" and e.data and "train_loss" in e.data),
        key=lambda data: int(data["step"]),
    )
    assert [int(data["step"]) for data in steps] == list(range(1, 9))
    for data in steps:
        assert all(math.isfinite(float(data[name])) for name in (*DPO_METRICS, "train_loss")), data
    assert float(steps[0]["train_loss"]) == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
    assert float(steps[-1]["train_loss"]) < math.log(2) and float(steps[-1]["rewards/margins"]) > 0

    # Deploy: the base model's server, then the DPO adapter attached to it; both answer.
    tuned = done["fine_tuned_model"]
    base = http.post("/v1/deployments", json={"model": TINY}, headers=headers)
    assert base.status_code == 201, base.text
    assert wait_deployment(http, base.json()["id"], headers).json()["status"] == "ready"
    adapter = http.post("/v1/deployments", json={"model": tuned}, headers=headers)
    assert adapter.status_code == 201, adapter.text
    assert adapter.json()["placement"] == "adapter"
    assert wait_deployment(http, adapter.json()["id"], headers).json()["status"] == "ready"
    reply = sdk.chat.completions.create(model=tuned, messages=QUESTION, max_tokens=12, temperature=0)
    assert reply.model == tuned and reply.choices[0].message.content and reply.usage is not None

    assert http.delete(f"/v1/deployments/{adapter.json()['id']}", headers=headers).status_code == 200
    assert wait_deployment(http, adapter.json()["id"], headers).status_code == 404
    assert http.delete(f"/v1/deployments/{base.json()['id']}", headers=headers).status_code == 200
    assert wait_deployment(http, base.json()["id"], headers).status_code == 404


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_tiny_model(path / "tiny-llama")  # where the job's model name resolves to
    return path


def test_two_ray_train_workers_run_dpo_like_one_process_with_accumulation(
    ray_cluster: str, models_dir: Path, tmp_path: Path
) -> None:
    import ray

    data = tmp_path / "preferences.jsonl"
    data.write_bytes(preferences(32))
    # A full fine-tune: each rank computes the reference log-probs of its share, summed over ranks.
    spec = {
        "base_model": TINY, "models_dir": str(models_dir), "training_file": str(data),
        "validation_file": str(data), "output_dir": str(tmp_path / "two"), "objective": "dpo", "beta": 0.2,
        "method": "full", "n_epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "max_seq_len": 64,
        "seed": 0, "num_workers": 2, "cpus_per_worker": 0.5,
    }  # fmt: skip
    argv, env = command(spec, tmp_path, ray.get_runtime_context().gcs_address)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = events_of(proc.stdout)
    steps = [e for e in events if e["type"] == "metrics" and "train_loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 9))  # 32 pairs / (2 workers x 4) x 2 epochs

    one = TrainConfig.model_validate(
        spec | {"base_model": str(models_dir / "tiny-llama"), "output_dir": str(tmp_path / "one")}
        | {"num_workers": 1, "gradient_accumulation_steps": 2}
    )  # fmt: skip
    single: list[dict[str, Any]] = []
    train(one, report=single.append)
    alone = [e for e in single if "train_loss" in e]
    # Same pairs per step, same reference, same normalisation: equal up to the summation order of DDP's
    # all-reduce against accumulation, which AdamW on every weight grows to ~0.2% of a reward by step 8.
    assert [e["train_loss"] for e in steps] == pytest.approx([e["train_loss"] for e in alone], rel=1e-3)
    for name in DPO_METRICS:
        assert [e[name] for e in steps] == pytest.approx([e[name] for e in alone], rel=1e-2, abs=1e-4), name
    (valid,) = [e for e in events if "valid_loss" in e]
    (valid_alone,) = [e for e in single if "valid_loss" in e]
    assert valid["valid_loss"] == pytest.approx(valid_alone["valid_loss"], rel=1e-4)
    assert valid["valid_rewards/accuracies"] == valid_alone["valid_rewards/accuracies"]
