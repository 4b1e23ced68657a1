"""No shared file system: a second Ray node trains from S3, and serves the adapter from S3 (issue 12, item 5).

A private two-node Ray cluster (`two_node_cluster.py`: a head without CPUs, as on `ray up cluster.yaml`,
and a second node with its own `STUDIO_NODE_CACHE_DIR`), SeaweedFS as S3. The tracker's own `JobRunner`
(built by the composition root with S3 configured) launches the job through the Jobs API; the run can
only land on the second node. As on a node that does not mount the head's disk, the head's data
directory is moved out of sight when the run is submitted: the run must take its config from the
launch's environment and its dataset from S3, upload its checkpoints and final adapter, and the tracker
must record the adapter's `s3://` copy. Then the base model's server, on the second node, attaches the
adapter from its deployment record, whose directory is not on that node, through the node's cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import select
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray.job_submission import JobSubmissionClient

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.app.model_servers import model_store, s3_env
from studio.backends.ray_jobs import RayJobLauncher
from studio.config import Settings
from studio.schemas.clients import Client, ClientLimits
from studio.schemas.datasets import Dataset, S3Mirror
from studio.schemas.deployments import DeploymentCreate
from studio.services.deployment_planner import DeploymentPlanner
from studio.stores.mongo import MongoStore
from studio.training.s3_objects import S3Location, keys_under
from tests.api.datasets_data import chat_rows, jsonl
from tests.conftest import S3Endpoint, make_settings
from tests.helpers import ENDED, SMALL_LORA, TINY, stored_job
from tests.integration.serve_from_s3 import RESULT_PREFIX
from tests.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE_START_S = 120
RUN_TIMEOUT_S = 420
SERVE_TIMEOUT_S = 600


@dataclass(frozen=True)
class TwoNodes:
    gcs: str
    dashboard: str
    node2: str
    cache: Path  # the second node's STUDIO_NODE_CACHE_DIR


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    """Start the private cluster in its own process; stop it (closing its stdin) after the test."""
    cache = tmp_path / "node2-cache"
    with (tmp_path / "cluster.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.two_node_cluster", str(cache)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert process.stdin is not None and process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], NODE_START_S)
        line = process.stdout.readline() if ready else b""
        assert line, f"the two-node cluster did not start: {(tmp_path / 'cluster.log').read_text()[-3000:]}"
        info = json.loads(line)
        _wait_for_jobs_api(info["dashboard"])
        yield TwoNodes(info["gcs"], info["dashboard"], info["node2"], cache)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # its nodes' processes die with their reaper
            process.wait(timeout=10)


def _wait_for_jobs_api(address: str) -> None:
    """Return once the Jobs API runs a job (a new node's dashboard agent takes a while to register)."""
    client = JobSubmissionClient(address)
    deadline = time.monotonic() + NODE_START_S
    while True:
        try:
            submitted = client.submit_job(entrypoint="true", entrypoint_num_cpus=1)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while not client.get_job_status(submitted).is_terminal():
        assert time.monotonic() < deadline, "the Jobs API did not run a job"
        time.sleep(0.5)


class UnmountingLauncher(RayJobLauncher):
    """The real launcher, which moves the head's data directory out of sight when it submits a run: the
    tracker wrote the run's config there, and a node that does not mount it sees none of it."""

    def __init__(self, address: str, *, data_dir: Path, namespace: str) -> None:
        super().__init__(address, namespace=namespace)
        self.data_dir = data_dir
        self.hidden: list[Path] = []  # where it went at each submission

    async def submit(self, **kwargs: Any) -> str:
        if self.data_dir.exists():
            self.hidden.append(self.data_dir.with_name(f"{self.data_dir.name}-unmounted-{len(self.hidden)}"))
            self.data_dir.rename(self.hidden[-1])
        return await super().submit(**kwargs)


async def _dataset(store: MongoStore, s3: S3Endpoint, client_id: str) -> str:
    """Store a client and its training file, mirrored to S3 (its local copy is on the head only)."""
    await store.clients.insert_client(
        Client(id=client_id, name="two-nodes", limits=ClientLimits(max_concurrent_jobs=4), created_at=1)
    )
    file_id = f"file-{client_id}"
    key = f"{client_id}/files/{file_id}.jsonl"
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key=key, Body=jsonl(chat_rows(32)))
    dataset = Dataset(
        id=file_id,
        client_id=client_id,
        filename="train.jsonl",
        bytes=1,
        sha256=file_id,
        status="ready",
        format="chat",
        local_path=f"{client_id}/{file_id}.jsonl",
        s3=S3Mirror(state="mirrored", uri=f"s3://{s3.bucket}/{key}"),
        created_at=1,
    )
    await store.datasets.insert(dataset)
    return file_id


@pytest.fixture
def settings(tmp_path: Path, mongo_url: str, s3_endpoint: S3Endpoint) -> Settings:
    """The studio's settings with S3; its data directory (`head-data`) is the head's."""
    training = {"checkpoint_every_steps": 2, "max_seq_len": 128}
    return make_settings(tmp_path / "head-data", mongo_url=mongo_url, s3=s3_endpoint, training=training)


@pytest.fixture
async def store(settings: Settings, mongo_url: str) -> AsyncIterator[MongoStore]:
    opened = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await opened.base_models.put(entry)
    yield opened
    await opened.close()


async def test_a_node_without_the_data_folder_trains_from_s3_and_serves_the_adapter_from_s3(
    two_nodes: TwoNodes, s3_endpoint: S3Endpoint, settings: Settings, store: MongoStore, mongo_url: str
) -> None:
    head = settings.data_dir
    client_id = f"client-2n{int(time.time() * 1000) % 10**9}"
    file_id = await _dataset(store, s3_endpoint, client_id)
    hyperparameters = SMALL_LORA.model_copy(update={"batch_size": 8})  # 32 rows: 4 steps
    job = stored_job(client_id, created_at=1, file_id=file_id).model_copy(
        update={"hyperparameters": hyperparameters}
    )
    await store.jobs.insert(job)
    launcher = UnmountingLauncher(two_nodes.dashboard, data_dir=head, namespace=settings.ray.namespace)

    async with open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (current := await store.jobs.get(client_id=client_id, job_id=job.id)) is not None:
            if current.status in ENDED or time.monotonic() > deadline:
                break
            await runner.round()
            await asyncio.sleep(1)
    assert current is not None and current.ray_job_id is not None
    logs = JobSubmissionClient(two_nodes.dashboard).get_job_logs(current.ray_job_id)
    assert current.status == "succeeded", (current.error, logs[-3000:])
    info = JobSubmissionClient(two_nodes.dashboard).get_job_info(current.ray_job_id)
    assert info.driver_node_id == two_nodes.node2  # the head has no CPUs

    # Its dataset came from S3 into node 2's cache; its outputs went to node 2's cache and to S3.
    output = f"s3://{s3_endpoint.bucket}/{client_id}/jobs/{job.id}"
    assert current.output_model_uri == f"{output}/final"
    assert current.output_model_path is not None
    assert Path(current.output_model_path).is_relative_to(two_nodes.cache / "jobs" / job.id)
    dataset_key = f"{client_id}/files/{file_id}.jsonl"
    assert (two_nodes.cache / "datasets" / s3_endpoint.bucket / dataset_key).is_file()
    s3 = s3_endpoint.client()
    final_keys = keys_under(s3, S3Location.parse(current.output_model_uri))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(final_keys)
    for step in (2, 4):
        assert "trainer_state.json" in keys_under(s3, S3Location.parse(f"{output}/checkpoints/step-{step}"))
    checkpoints = await store.checkpoints.list(job_id=job.id, after=None, limit=10)
    assert sorted(c.step for c in checkpoints) == [2, 4]
    # Nothing the run did reached the head's data directory: the tracker's config file is all it holds.
    assert not (head / "jobs").exists()
    assert len(launcher.hidden) == current.attempts == 1
    assert sorted(p.name for p in (launcher.hidden[0] / "jobs").rglob("*")) == ["config.json", job.id]

    # Serving: the run's own copy goes, so node 2 has only S3 to load the adapter from (as any node
    # other than the one that trained it); the head's data directory is again out of sight.
    await asyncio.to_thread(shutil.rmtree, two_nodes.cache / "jobs" / job.id)
    if head.exists():  # the tracker published the job's result file there
        head.rename(head.with_name("head-data-results"))
    planner = DeploymentPlanner(
        deployments=store.deployments,
        base_models=store.base_models,
        jobs=store.jobs,
        settings=settings.serving,
    )
    base = await planner.plan(owner=client_id, allowed=None, body=DeploymentCreate(model=TINY))
    await store.deployments.insert(base.model_copy(update={"status": "ready"}))
    assert current.fine_tuned_model is not None
    adapter = await planner.plan(
        owner=client_id, allowed=None, body=DeploymentCreate(model=current.fine_tuned_model)
    )
    assert adapter.placement == "adapter" and adapter.adapter_uri == current.output_model_uri
    store_settings = model_store(settings)
    assert store_settings is not None
    spec = {
        "gcs": two_nodes.gcs,
        "http_port": free_port(),
        "scratch_dir": str(settings.serving_scratch_dir),
        "models_dir": str(settings.models_dir),
        "store": dataclasses.asdict(store_settings),
        "env": s3_env(settings),
        "base": base.model_dump(mode="json"),
        "adapter": adapter.model_dump(mode="json"),
    }
    driver = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.integration.serve_from_s3"],
        cwd=ROOT,
        input=json.dumps(spec) + "\n",
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    assert driver.returncode == 0, driver.stderr[-4000:]
    (line,) = [line for line in driver.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    served = json.loads(line.removeprefix(RESULT_PREFIX))
    cached = Path(served["attached"]["path"])
    assert served["attached"]["adapter"] == current.fine_tuned_model
    assert cached.is_relative_to(two_nodes.cache / "s3-models")  # node 2's cache, from S3
    assert (cached / "adapter_config.json").is_file()
    assert served["answer"]["model"] == current.fine_tuned_model
    assert served["answer"]["choices"][0]["message"]["content"]
    # Node 2 kept its scratch files and built the base model in its own cache, not in the head's folders.
    assert not head.exists()
    assert (two_nodes.cache / "models").is_dir() and (two_nodes.cache / "vllm").is_dir()
