"""`jobs watch` against a mock API: progress lines with the sparkline, reconnects without repeats."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from studio.cli.client import ApiClient
from studio.cli.watch import RunView, watch_job


def event(n: int, *, loss: float | None = None, message: str = "") -> dict[str, Any]:
    data = {"step": n, "total_steps": 4, "train_loss": loss, "learning_rate": 2e-4} if loss else None
    return {
        "object": "fine_tuning.job.event",
        "id": f"ev-{n}",
        "created_at": 1_700_000_000 + n,
        "level": "info",
        "message": message or f"Step {n}",
        "type": "metrics" if loss else "message",
        "data": data,
    }


def sse(events: list[dict[str, Any]], *, done: bool) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ("data: [DONE]\n\n" if done else "")


class FakeStudio:
    """A job that runs for two reads of the events stream: the first stream ends early (as a stream
    bounded by the server does), the second replays everything and ends with the job."""

    def __init__(self, final: str) -> None:
        self.final = final
        self.streams = 0
        self.events = [
            event(0, message="Fine-tuning job started"),
            event(1, loss=3.0),
            event(2, loss=2.0),
            event(3, loss=1.5),
            event(4, loss=0.5),
        ]

    def job(self) -> dict[str, Any]:
        status = self.final if self.streams >= 2 else "running"
        return {
            "id": "ftjob-1",
            "status": status,
            "created_at": 1_700_000_000,
            "finished_at": 1_700_000_065 if status != "running" else None,
            "fine_tuned_model": "ft:tiny:c::ftjob-1" if status == "succeeded" else None,
            "error": {"message": "out of memory"} if status == "failed" else None,
            "progress": {"step": 0, "total_steps": 4},
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            assert request.url.params["stream"] == "true"
            self.streams += 1
            if self.streams == 1:
                return httpx.Response(200, text=sse(self.events[:3], done=False))
            return httpx.Response(200, text=sse(self.events, done=True))
        return httpx.Response(200, json=self.job())


def test_watch_prints_each_event_once_then_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    studio = FakeStudio("succeeded")
    with ApiClient("http://studio.test", "k", timeout_s=5, transport=httpx.MockTransport(studio)) as api:
        final = watch_job(api, "ftjob-1", as_json=False)
    out = capsys.readouterr().out
    assert final["status"] == "succeeded" and studio.streams == 2
    assert out.count("Fine-tuning job started") == 1
    assert "loss curve █▅▄▁" in out
    assert "ftjob-1 succeeded in 1m05s: ft:tiny:c::ftjob-1" in out


def test_watch_as_json_lines_and_a_failed_job(capsys: pytest.CaptureFixture[str]) -> None:
    studio = FakeStudio("failed")
    with ApiClient("http://studio.test", "k", timeout_s=5, transport=httpx.MockTransport(studio)) as api:
        final = watch_job(api, "ftjob-1", as_json=True)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["id"] for line in lines] == ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ftjob-1"]
    assert final["status"] == lines[-1]["status"] == "failed"


def test_the_progress_line() -> None:
    view = RunView({"id": "ftjob-1", "status": "running", "progress": {"step": 2, "total_steps": 8}})
    assert view.summary() == "running  step 2/8"
    view.add_metrics({"step": 3, "epoch": 0.375, "train_loss": 2.5, "tokens_per_second": 120.4})
    view.add_metrics({"step": 4, "train_loss": 1.25, "eta_seconds": 65, "learning_rate": 0.0002})
    view.add_metrics({"step": 4, "valid_loss": 1.5})
    assert view.summary() == (
        "running  step 4/8  epoch 0.38  loss 1.2500 █▁  valid 1.5000 ▄  lr 2.0e-04  120 tok/s  ETA 1m05s"
    )
