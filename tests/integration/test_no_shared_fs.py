"""No shared file system: a second Ray node trains from S3 and its model lands in S3 (issue 12, item 5).

A second node joins the session's Ray cluster (`ray start --address ... --block`, its own temp dir and
its own `STUDIO_NODE_CACHE_DIR`, a custom resource `node2`), SeaweedFS is the S3 store. The run is
pinned to that node; every local path of its config (the config file itself, the dataset, the output
and models folders) lies under a "head data directory" that does not exist, as on a node that does not
mount the head's disk. The run must take its config from the launch's environment, its dataset from S3,
and upload its checkpoints and final adapter to S3; then a model server's node-local cache loads that
adapter from S3 and evicts whole folders past its size bound.
"""

from __future__ import annotations

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
import ray
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


@pytest.fixture
def second_node(ray_cluster: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Start a second Ray node with its own cache directory; yield (its node id, that directory)."""
    cache = tmp_path / "node2-cache"
    temp_dir = Path(os.path.realpath(f"/tmp/ray2-{os.getpid()}"))
    env = {**os.environ, "STUDIO_NODE_CACHE_DIR": str(cache)}
    argv = [
        str(Path(sys.executable).with_name("ray")), "start", "--address",
        ray.get_runtime_context().gcs_address, "--num-cpus", "1", "--resources",
        json.dumps({NODE_RESOURCE: 1}), "--temp-dir", str(temp_dir), "--block", "--disable-usage-stats",
        "--node-ip-address", ray.util.get_node_ip_address(),
        # Its own agent ports: the head's defaults are taken on this machine.
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
    ]  # fmt: skip
    log = (tmp_path / "node2.log").open("wb")
    node = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        node_id = _wait_for_node(node)
        yield node_id, cache
    finally:
        # Only what this fixture started: `ray start --block` stops its node's processes on SIGTERM.
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=10)
        log.close()


def _wait_for_node(node: subprocess.Popen[bytes]) -> str:
    for _ in range(240):
        for info in ray.nodes():  # type: ignore[no-untyped-call]
            if info["Alive"] and NODE_RESOURCE in info["Resources"]:
                return str(info["NodeID"])
        if node.poll() is not None:
            raise AssertionError(f"the second Ray node exited with {node.returncode}")
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
    ray_cluster: str,
    second_node: tuple[str, Path],
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node_id, node_cache = second_node
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

    jobs = JobSubmissionClient(ray_cluster)
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
