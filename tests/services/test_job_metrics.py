"""The tracker's job metrics on the real MongoDB-protocol server, recorded by a fake `StudioMetrics`:
jobs by status each round, the queue wait at launch, tokens trained from the run's step events, and
jobs reaching a final status (counted once, by the writer whose update won)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from studio.app.builtin_models import builtin_models
from studio.app.container import open_job_runner
from studio.services.job_runner import JobRunner
from studio.stores.mongo import MongoStore
from studio.training.tiny_model import TINY_MODEL_NAME
from tests.conftest import make_settings
from tests.fakes import RecordingLauncher, RecordingMetrics
from tests.helpers import stored_job
from tests.services.test_job_queue import Queue


def event_line(fields: dict[str, Any]) -> str:
    return f"MINISTUDIO_EVENT {json.dumps(fields)}\n"


@pytest.fixture
async def tracked(tmp_path: Path, mongo_url: str) -> AsyncIterator[tuple[Queue, RecordingMetrics]]:
    settings = make_settings(tmp_path, mongo_url=mongo_url, tracker={"max_pending_launches": 2})
    store = await MongoStore.connect(mongo_url, settings.store)
    for entry in builtin_models():
        await store.base_models.put(entry)
    launcher, metrics = RecordingLauncher(), RecordingMetrics()
    try:
        async with open_job_runner(
            settings, mongo_url=mongo_url, launcher=launcher, metrics=metrics
        ) as runner:
            assert isinstance(runner, JobRunner)
            yield Queue(store, runner, launcher, settings), metrics
    finally:
        await store.close()


async def test_the_tracker_publishes_statuses_queue_wait_tokens_and_endings(
    tracked: tuple[Queue, RecordingMetrics],
) -> None:
    queue, metrics = tracked
    client = await queue.client("metered", max_concurrent_jobs=2)
    created_ns = time.time_ns() - 5 * 10**9  # five seconds ago, as far as the queue wait can tell
    for offset in range(3):
        job = stored_job(client, created_at=created_ns // 10**9, file_id=f"file-{client}")
        await queue.store.jobs.insert(job.model_copy(update={"created_ns": created_ns + offset}))

    await queue.runner.round()
    launched = metrics.of("job_launched")
    assert [(m["model"], m["client_id"]) for m in launched] == [(TINY_MODEL_NAME, client)] * 2
    assert all(4.5 < m["queued_s"] < 60 for m in launched), launched
    # Two launched (queued while Ray starts them) and one waiting: three queued.
    assert metrics.of("jobs_in_status")[-1]["counts"] == {"queued": 3}

    # The first run writes two steps and its result: tokens counted from the cumulative figure.
    first = queue.launcher.submitted[0].submission_id
    queue.launcher.states[first] = "running"
    steps = [
        {"type": "metrics", "step": 1, "total_steps": 2, "train_loss": 2.0, "trained_tokens": 120},
        {"type": "metrics", "step": 2, "total_steps": 2, "train_loss": 1.5, "trained_tokens": 250},
        {"type": "metrics", "step": 2, "valid_loss": 1.7},  # an evaluation: no tokens
    ]
    queue.launcher.logs_of[first] = "".join(event_line(step) for step in steps)
    await queue.runner.round()
    assert [m["tokens"] for m in metrics.of("tokens_trained")] == [120, 130]
    assert metrics.of("jobs_in_status")[-1]["counts"] == {"running": 1, "queued": 2}

    result = {"type": "result", "final_path": None, "trained_tokens": 250, "steps": 2, "stopped": False}
    queue.launcher.logs_of[first] += event_line(result)
    queue.launcher.states[first] = "succeeded"
    await queue.runner.round()
    await queue.runner.round()  # reading the same log again counts nothing more
    assert sum(m["tokens"] for m in metrics.of("tokens_trained")) == 250
    assert [(m["status"], m["client_id"]) for m in metrics.of("job_ended")] == [("succeeded", client)]
