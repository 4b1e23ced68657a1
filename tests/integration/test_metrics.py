"""Mini Studio's metrics as Prometheus scrapes them: a job and chats through Serve's proxy, then the
values read back from Ray's metrics endpoint (`http://<node>:<MetricsExportPort>/metrics`, every
name prefixed `ray_`, counters suffixed `_total`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx
import pytest
import ray

from tests.helpers import new_tenant, wait_for
from tests.integration.conftest import ServeApp
from tests.integration.test_jobs import TINY
from tests.integration.test_serving import QUESTION, wait_deployment

pytestmark = pytest.mark.integration
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape() -> list[tuple[str, dict[str, str], float]]:
    """Return every sample of every node's metrics endpoint: (name, labels, value)."""
    samples = []
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for line in httpx.get(url, timeout=30).text.splitlines():
            match = SAMPLE.match(line)
            if match and not line.startswith("#"):
                labels = dict(LABEL.findall(match["labels"] or ""))
                samples.append((match["name"], labels, float(match["value"])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Return the sum over processes (and other labels) of `name`'s samples matching `labels`."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def until(check: Callable[[list[tuple[str, dict[str, str], float]]], bool], timeout_s: float = 90) -> list:
    """Scrape until `check` holds (Ray's agents export every few seconds); return the samples."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape()
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(2)


def test_a_job_and_chats_show_in_rays_prometheus_endpoint(serve_app: ServeApp, http: httpx.Client) -> None:
    tenant = new_tenant(serve_app, http, "metrics")  # uploads the capitals file
    headers, client = tenant.headers, tenant.id
    uploaded = http.get(f"/v1/files/{tenant.file_id}", headers=headers).json()["bytes"]
    job = tenant.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=tenant.file_id,
        hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 10},
    )
    created = http.post("/v1/deployments", json={"model": TINY}, headers=headers)
    ours = created.status_code == 201
    assert ours or created.json()["error"]["code"] == "already_deployed", created.text
    deployment = created.json()["id"] if ours else None
    try:
        if deployment is not None:
            # The model server starts while the job trains: slow on a small, busy machine.
            assert wait_deployment(http, deployment, headers, timeout_s=600).json()["status"] == "ready"
        reply = http.post(
            "/v1/chat/completions",
            json={"model": TINY, "messages": QUESTION, "max_tokens": 6},
            headers=headers,
            timeout=300,
        )
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
        streamed = http.post(
            "/v1/chat/completions",
            json={"model": TINY, "messages": QUESTION, "max_tokens": 5, "stream": True,
                  "stream_options": {"include_usage": True}},
            headers=headers,
            timeout=300,
        )  # fmt: skip
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("[DONE]"), streamed.text
        (last,) = [e for e in streamed.text.split("\n\n") if '"usage":{' in e]
        streamed_usage = json.loads(last.removeprefix("data: "))["usage"]
        # vLLM's own engine stats, exported by the model server's replica through Ray (read while it runs).
        generated = usage["completion_tokens"] + streamed_usage["completion_tokens"]
        until(lambda s: total(s, "ray_vllm_generation_tokens_total") >= generated)
        missing = http.get("/v1/files/file-nothing-here", headers=headers)
        assert missing.status_code == 404
        done = wait_for(http, job.id, headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
    finally:
        if deployment is not None:
            http.delete(f"/v1/deployments/{deployment}", headers=headers)

    p = "ray_mini_studio_"
    mine = {"client_id": client}
    samples = until(
        lambda s: (
            total(s, p + "jobs_ended_total", status="succeeded", **mine) == 1
            and total(s, p + "inference_requests_total", **mine) == 2
            and total(s, p + "trained_tokens_total", **mine) == done["trained_tokens"]
            and total(s, p + "inference_time_to_first_token_seconds_count", **mine) == 1
        )
    )
    assert total(samples, p + "upload_bytes_total", **mine) == uploaded
    assert total(samples, p + "job_queue_wait_seconds_count", model=TINY, **mine) == 1
    assert total(samples, p + "trained_tokens_total", model=TINY, **mine) == done["trained_tokens"] > 0
    assert total(samples, p + "jobs_ended_total", status="succeeded", model=TINY, **mine) == 1
    for stream in ("false", "true"):
        requests = total(samples, p + "inference_requests_total", stream=stream, outcome="ok", **mine)
        assert requests == 1, (stream, requests)
    for kind in ("prompt", "completion"):
        tokens = total(samples, p + "inference_tokens_total", type=kind, model=TINY, **mine)
        assert tokens == usage[f"{kind}_tokens"] + streamed_usage[f"{kind}_tokens"], (kind, tokens)
    assert total(samples, p + "inference_time_to_first_token_seconds_count", model=TINY, **mine) == 1
    assert total(samples, p + "api_errors_total", status="404", code="file_not_found") >= 1
    # The tracker's gauge of jobs by status is exported (its values depend on the other tests running).
    assert {ls.get("status") for n, ls, _ in samples if n == p + "jobs"} >= {
        "queued",
        "running",
        "validating_files",
    }
    # Request ids never become tags.
    assert not any("request_id" in ls for n, ls, _ in samples if n.startswith(p))
