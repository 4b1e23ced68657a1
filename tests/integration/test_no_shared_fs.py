"""No shared file system: a second Ray node trains from S3 and its model lands in S3 (issue 12, item 5).

A private two-node Ray cluster (`ray start --block` on free ports; the second node has its own temp dir,
its own `STUDIO_NODE_CACHE_DIR`, a custom resource `node2`), SeaweedFS is the S3 store. The run is
pinned to that node; every local path of its config (the config file itself, the dataset, the output
and models folders) lies under a "head data directory" that does not exist, as on a node that does not
mount the head's disk. The run must take its config from the launch's environment, its dataset from S3,
and upload its checkpoints and final adapter to S3; then a model server's node-local cache loads that
adapter from S3 and evicts whole folders past its size bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr
from ray.job_submission import JobStatus, JobSubmissionClient

from studio.backends.ray_jobs import JOB_ENV
from studio.config import S3Settings
from studio.services.remote_storage import remote_env, remote_storage
from studio.serving.model_cache import ModelCache
from studio.training.config import TrainConfig
from studio.training.s3_objects import S3Location, keys_under
from studio.training.tiny_model import TINY_MODEL_NAME
from tests.conftest import S3Endpoint
from tests.helpers import chat_rows, events_of, jsonl
from tests.servers import free_port

pytestmark = pytest.mark.integration

NODE_RESOURCE = "node2"


def _ray_start(argv: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `ray start ... --block` on free ports in its own process group (the head's defaults are
    taken on a machine that runs other clusters)."""
    ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
    argv = [str(Path(sys.executable).with_name("ray")), "start", *argv, "--block", "--disable-usage-stats"]
    for flag in [*ports, "--metrics-export-port"]:
        argv += [flag, str(free_port())]
    argv += ["--node-ip-address", "127.0.0.1"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(node: subprocess.Popen[bytes]) -> None:
    """Stop one `ray start --block` (it stops its node's processes on SIGTERM)."""
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=10)


@pytest.fixture
def two_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Path]]:
    """A private two-node Ray cluster: a head, and a second node with the custom resource `node2` and its
    own cache directory. Yield (the Jobs API address, the second node's id, its cache directory)."""
    cache = tmp_path / "node2-cache"
    gcs_port, dashboard_port = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        head_argv = ["--head", "--port", str(gcs_port), "--num-cpus", "1", "--temp-dir",
                     f"/tmp/rayns-h{os.getpid()}", "--include-dashboard", "true", "--dashboard-host",
                     "127.0.0.1", "--dashboard-port", str(dashboard_port),
                     "--ray-client-server-port", str(free_port())]  # fmt: skip
        # Token authentication (Ray's default for a head) on both nodes: a worker node defaults to none.
        monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "token"))  # this client too
        base_env = dict(os.environ)
        started.append(_ray_start(head_argv, env=base_env, log=tmp_path / "head.log"))
        address = f"http://127.0.0.1:{dashboard_port}"
        node2_argv = ["--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "1", "--resources",
                      json.dumps({NODE_RESOURCE: 1}), "--temp-dir", f"/tmp/rayns-w{os.getpid()}"]  # fmt: skip
        env = {**base_env, "STUDIO_NODE_CACHE_DIR": str(cache)}
        started.append(_ray_start(node2_argv, env=env, log=tmp_path / "node2.log"))
        yield address, _wait_for_node(address, started), cache
    finally:
        for node in reversed(started):  # only what this fixture started
            _stop(node)


def _wait_for_node(address: str, started: list[subprocess.Popen[bytes]]) -> str:
    from ray.util.state import list_nodes

    for _ in range(240):
        if any(node.poll() is not None for node in started):
            raise AssertionError("a Ray node of the test exited")
        with contextlib.suppress(Exception):  # the dashboard is not up yet
            for node in list_nodes(address=address, timeout=5):
                if node.state == "ALIVE" and NODE_RESOURCE in (node.resources_total or {}):
                    return str(node.node_id)
        time.sleep(0.5)
    raise AssertionError("the second Ray node did not join")


def _s3_settings(s3: S3Endpoint) -> S3Settings:
    return S3Settings(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        access_key_id=SecretStr(s3.access_key),
        secret_access_key=SecretStr(s3.secret_key),
    )


def test_a_node_without_the_data_folder_trains_from_s3_and_serves_from_its_cache(
    two_nodes: tuple[str, str, Path],
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray_address, node_id, node_cache = two_nodes
    settings = _s3_settings(s3_endpoint)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.endpoint_url,
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name="us-east-1",
    )
    job_id = f"ftjob-noshare{os.getpid()}{int(time.time())}"
    dataset_key = f"client-ns/file-{job_id}/train.jsonl"
    client.put_object(Bucket=s3_endpoint.bucket, Key=dataset_key, Body=jsonl(chat_rows(32)))
    head = tmp_path / "head-data"  # never created: the head's data directory, unseen by node 2
    config = TrainConfig(
        base_model=TINY_MODEL_NAME,
        models_dir=head / "models",
        training_file=head / "datasets" / "train.jsonl",
        output_dir=head / "jobs" / job_id,
        n_epochs=2,
        batch_size=8,
        learning_rate=0.02,
        max_seq_len=128,
        checkpoint_every_steps=4,
        remote=remote_storage(
            settings,
            client_id="client-ns",
            job_id=job_id,
            training=f"s3://{s3_endpoint.bucket}/{dataset_key}",
            validation=None,
        ),
    )
    env = remote_env(settings, config)
    assert "STUDIO_TRAIN_CONFIG" in env and s3_endpoint.secret_key not in config.model_dump_json()

    jobs = JobSubmissionClient(ray_address)
    entrypoint = [
        sys.executable,
        "-m",
        "studio.training",
        "--config",
        str(head / "jobs" / job_id / "config.json"),
    ]
    for _ in range(120):  # until the new node's dashboard agent takes jobs
        try:
            submitted = jobs.submit_job(
                entrypoint=shlex.join(entrypoint),
                runtime_env={"env_vars": {**JOB_ENV, **env}},
                entrypoint_num_cpus=1,
                entrypoint_resources={NODE_RESOURCE: 1},
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc):
                raise
            time.sleep(0.5)
    for _ in range(900):
        status = jobs.get_job_status(submitted)
        if status.is_terminal():
            break
        time.sleep(0.5)
    logs = jobs.get_job_logs(submitted)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert jobs.get_job_info(submitted).driver_node_id == node_id  # it ran on the second node

    events = events_of(logs)
    output = f"s3://{s3_endpoint.bucket}/client-ns/jobs/{job_id}"
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [e["uri"] for e in checkpoints] == [f"{output}/checkpoints/step-4", f"{output}/checkpoints/step-8"]
    (result,) = [e for e in events if e["type"] == "result"]
    assert result["steps"] == 8 and result["final_uri"] == f"{output}/final"
    final_keys = keys_under(client, S3Location.parse(result["final_uri"]))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(final_keys)
    assert "trainer_state.json" in keys_under(client, S3Location.parse(checkpoints[0]["uri"]))
    # Everything it read or wrote lies in node 2's cache; nothing touched the head's data directory.
    assert not head.exists()
    assert (node_cache / "datasets" / s3_endpoint.bucket / dataset_key).is_file()
    assert Path(result["final_path"]).is_relative_to(node_cache / "jobs" / job_id)

    # A model server's cache: the adapter from S3, then a checkpoint that pushes it out (bound: one).
    adapter_bytes = sum(final_keys.values())
    cache = ModelCache(
        tmp_path / "server-cache",
        max_bytes=adapter_bytes + adapter_bytes // 2,
        endpoint_url=s3_endpoint.endpoint_url,
        region="us-east-1",
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key)  # as a replica gets them
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_key)
    adapter = Path(cache.local(result["final_uri"]))
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == config.lora_r
    assert cache.local(result["final_uri"]) == str(adapter)  # no second fetch
    checkpoint = Path(cache.local(checkpoints[0]["uri"]))
    assert (checkpoint / "trainer_state.json").is_file()
    assert cache.cached() == [checkpoint] and not adapter.exists()  # the least recently used went
    assert cache.local(str(head)) == str(head)  # a local path is not the cache's business
