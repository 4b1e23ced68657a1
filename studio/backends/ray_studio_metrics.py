"""`StudioMetrics` as Ray metrics (`ray.util.metrics`), which Ray's per-node metrics agent exports in
Prometheus' format at `http://<node>:<metrics_export_port>/metrics`, each name prefixed `ray_` (a
counter also gains `_total`), with Ray's own tags (`SessionName`, `NodeAddress`, `WorkerId`, ...) added.

One set of metric objects per process (`ray_studio_metrics()`): the ingress replicas, the tracker actor
and in-process tests each record into their own, and Prometheus sums over processes with `sum by (...)`.
Recording never raises: a bad value is logged once per metric and dropped.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

PREFIX = "mini_studio_"
# The statuses whose counts the jobs gauge always sets (so a status that empties reads 0, not stale).
FOLLOWED_STATUSES = ("validating_files", "queued", "running")
QUEUE_WAIT_BOUNDARIES = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0]
TTFT_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]


class RayStudioMetrics:
    """Every Mini Studio metric, created once per process (see `ray_studio_metrics`)."""

    def __init__(self) -> None:
        model_client = ("model", "client_id")
        self._jobs = Gauge(
            PREFIX + "jobs",
            description="Jobs in each status the tracker follows (validating_files, queued, running).",
            tag_keys=("status",),
        )
        self._jobs_ended = Counter(
            PREFIX + "jobs_ended",
            description="Jobs that reached a final status (succeeded, failed, cancelled).",
            tag_keys=("status", *model_client),
        )
        self._queue_wait = Histogram(
            PREFIX + "job_queue_wait_seconds",
            description="Seconds from a job's creation to the launch of its first run.",
            boundaries=QUEUE_WAIT_BOUNDARIES,
            tag_keys=model_client,
        )
        self._trained = Counter(
            PREFIX + "trained_tokens",
            description="Tokens trained on, by base model and client, as runs report their steps.",
            tag_keys=model_client,
        )
        self._requests = Counter(
            PREFIX + "inference_requests",
            description="OpenAI inference requests by model, client, kind, streaming and outcome.",
            tag_keys=(*model_client, "kind", "stream", "outcome"),
        )
        self._tokens = Counter(
            PREFIX + "inference_tokens",
            description="Prompt and completion tokens of inference answers (from their usage).",
            tag_keys=(*model_client, "type"),
        )
        self._ttft = Histogram(
            PREFIX + "inference_time_to_first_token_seconds",
            description="Seconds from a streaming request's arrival to the model's first chunk.",
            boundaries=TTFT_BOUNDARIES,
            tag_keys=model_client,
        )
        self._uploaded = Counter(
            PREFIX + "upload_bytes",
            description="Bytes of files and upload parts clients sent, as written to the data directory.",
            tag_keys=("client_id",),
        )
        self._errors = Counter(
            PREFIX + "api_errors",
            description="Error answers of the API by HTTP status and OpenAI error code.",
            tag_keys=("status", "code"),
        )
        self._failed: set[str] = set()

    def _record(self, name: str, record: Any, value: float, tags: dict[str, str]) -> None:
        try:
            record(value, tags=tags)
        except Exception:  # metrics never fail what they measure
            if name not in self._failed:
                self._failed.add(name)
                log.warning("recording the metric %s failed", name, exc_info=True)

    def jobs_in_status(self, counts: dict[str, int]) -> None:
        for status in (*FOLLOWED_STATUSES, *(s for s in counts if s not in FOLLOWED_STATUSES)):
            self._record("jobs", self._jobs.set, float(counts.get(status, 0)), {"status": status})

    def job_ended(self, *, status: str, model: str, client_id: str) -> None:
        tags = {"status": status, "model": model, "client_id": client_id}
        self._record("jobs_ended", self._jobs_ended.inc, 1, tags)

    def job_launched(self, *, model: str, client_id: str, queued_s: float) -> None:
        tags = {"model": model, "client_id": client_id}
        self._record("job_queue_wait_seconds", self._queue_wait.observe, max(0.0, queued_s), tags)

    def tokens_trained(self, *, model: str, client_id: str, tokens: int) -> None:
        if tokens > 0:
            self._record(
                "trained_tokens", self._trained.inc, tokens, {"model": model, "client_id": client_id}
            )

    def inference_request(self, *, model: str, client_id: str, kind: str, stream: bool, outcome: str) -> None:
        tags = {
            "model": model,
            "client_id": client_id,
            "kind": kind,
            "stream": "true" if stream else "false",
            "outcome": outcome,
        }
        self._record("inference_requests", self._requests.inc, 1, tags)

    def inference_tokens(self, *, model: str, client_id: str, prompt: int, completion: int) -> None:
        for kind, count in (("prompt", prompt), ("completion", completion)):
            if count > 0:
                tags = {"model": model, "client_id": client_id, "type": kind}
                self._record("inference_tokens", self._tokens.inc, count, tags)

    def time_to_first_token(self, *, model: str, client_id: str, seconds: float) -> None:
        tags = {"model": model, "client_id": client_id}
        self._record("inference_time_to_first_token_seconds", self._ttft.observe, max(0.0, seconds), tags)

    def uploaded_bytes(self, *, client_id: str, size: int) -> None:
        if size > 0:
            self._record("upload_bytes", self._uploaded.inc, size, {"client_id": client_id})

    def api_error(self, *, status: int, code: str | None) -> None:
        self._record("api_errors", self._errors.inc, 1, {"status": str(status), "code": code or ""})


@cache
def ray_studio_metrics() -> RayStudioMetrics:
    """Return this process's metrics (created on first use; Ray registers each name once per process)."""
    return RayStudioMetrics()
