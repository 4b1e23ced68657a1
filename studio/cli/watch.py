"""`jobs watch`: follow a job's events stream live, with progress and a loss sparkline, to its end.

The events stream (`GET /v1/fine_tuning/jobs/{id}/events?stream=true`) replays every event oldest
first, then sends new ones until the job ends. It may also end earlier (the server bounds a stream's
length) or break: then the CLI reconnects and skips the events it has already shown, by id.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from studio.cli.client import ApiClient, ApiError
from studio.cli.output import console, duration, err_console
from studio.cli.sparkline import sparkline

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# The events stream sends nothing while a job waits in the queue: read that long before reconnecting.
STREAM_READ_TIMEOUT_S = 300.0
MAX_BROKEN_STREAMS = 5
# Without a terminal, a progress line at most this often (and always the last one).
PLAIN_EVERY_S = 2.0
# How often the job itself (status, ETA) is read again while its events stream.
JOB_REFRESH_S = 5.0
SPARK_WIDTH = 40


@dataclass
class RunView:
    """What is known of the run: the job as last read, and the metrics from its events so far."""

    job: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    latest: dict[str, Any] = field(default_factory=dict)

    def add_metrics(self, data: dict[str, Any]) -> None:
        """Record one metrics event's values (training step or evaluation)."""
        self.latest.update({k: v for k, v in data.items() if v is not None})
        if isinstance(data.get("train_loss"), int | float):
            self.train_loss.append(float(data["train_loss"]))
        if isinstance(data.get("valid_loss"), int | float):
            self.valid_loss.append(float(data["valid_loss"]))

    def _value(self, key: str) -> Any:
        progress = self.job.get("progress") or {}
        value = self.latest.get(key)
        return progress.get(key) if value is None else value

    def step_text(self) -> str:
        """Return `step 12/64  epoch 0.75` (what is known of it)."""
        step, total, epoch = self._value("step"), self._value("total_steps"), self._value("epoch")
        parts = [f"step {step or 0}/{total or '?'}"]
        if epoch is not None:
            parts.append(f"epoch {epoch:.2f}")
        return "  ".join(parts)

    def loss_text(self) -> str:
        """Return `loss 1.2345 ▇▆▅▃▂  valid 1.1000 ▅▃  lr 2.0e-04  312 tok/s  ETA 12s`, from what is known."""
        parts: list[str] = []
        if self.train_loss:
            parts.append(f"loss {self.train_loss[-1]:.4f} {sparkline(self.train_loss, SPARK_WIDTH)}")
        if self.valid_loss:
            parts.append(f"valid {self.valid_loss[-1]:.4f} {sparkline(self.valid_loss, SPARK_WIDTH // 2)}")
        lr, rate = self._value("learning_rate"), self._value("tokens_per_second")
        eta = self._value("eta_seconds")
        if lr is not None:
            parts.append(f"lr {lr:.1e}")
        if rate is not None:
            parts.append(f"{rate:.0f} tok/s")
        if eta is not None and self.job["status"] not in TERMINAL:
            parts.append(f"ETA {duration(eta)}")
        return "  ".join(parts)

    def summary(self) -> str:
        """Return one plain line: status, step, loss with its sparkline, rate, ETA."""
        return "  ".join(part for part in (self.job["status"], self.step_text(), self.loss_text()) if part)

    def render(self) -> RenderableType:
        """Return the live display: job and status, a progress bar, the loss line."""
        step, total = self._value("step") or 0, self._value("total_steps")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=float(total) if total else None, completed=float(step), width=30),
            Text(self.step_text()),
        )
        status = self.job["status"]
        title = Text.assemble((self.job["id"], "bold"), "  ", (status, _style(status)))
        return Group(title, bar, Text(self.loss_text() or "waiting for the first step..."))


def _style(status: str) -> str:
    return {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(status, "")


def _stamp(event: dict[str, Any]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(event.get("created_at") or time.time()))


class Watcher:
    """Reads the events stream, reconnecting when it ends early or breaks, and shows what it reads."""

    def __init__(self, api: ApiClient, job_id: str, *, as_json: bool) -> None:
        self.api = api
        self.job_id = job_id
        self.as_json = as_json
        self.view = RunView(api.get(f"/v1/fine_tuning/jobs/{job_id}"))
        self.seen: set[str] = set()
        self.live: Live | None = None
        self._printed_at = 0.0
        self._read_at = time.monotonic()
        self._unprinted = False

    def run(self) -> dict[str, Any]:
        """Follow the job until it ends; return its final state.

        Raises:
            ApiError: the job cannot be read (e.g. 404), or the stream broke five times in a row.
        """
        fancy = not self.as_json and console.is_terminal
        if fancy:
            with Live(self.view.render(), console=console, refresh_per_second=4, transient=False) as live:
                self.live = live
                self._follow()
                live.update(self.view.render())
        else:
            self._follow()
        self._finish()
        return self.view.job

    def _follow(self) -> None:
        broken = 0
        while self.view.job["status"] not in TERMINAL:
            try:
                with self.api.stream(
                    "GET",
                    f"/v1/fine_tuning/jobs/{self.job_id}/events",
                    params={"stream": "true"},
                    timeout_s=STREAM_READ_TIMEOUT_S,
                ) as events:
                    for event in events:
                        self._show(event)
                        broken = 0
            except ApiError as exc:
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    raise
                broken += 1
                if broken >= MAX_BROKEN_STREAMS:
                    raise
                time.sleep(min(2**broken, 10))
            self._refresh()

    def _refresh(self) -> None:
        self.view.job = self.api.get(f"/v1/fine_tuning/jobs/{self.job_id}")
        self._read_at = time.monotonic()
        if self.live is not None:
            self.live.update(self.view.render())

    def _show(self, event: dict[str, Any]) -> None:
        event_id = str(event.get("id"))
        if event_id in self.seen:
            return  # replayed after a reconnect
        self.seen.add(event_id)
        if self.as_json:
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        if event.get("type") == "metrics" and isinstance(event.get("data"), dict):
            self.view.add_metrics(event["data"])
            self._unprinted = True
        elif not self.as_json:
            line = f"{_stamp(event)} {event.get('message', '')}"
            if self.live is not None:
                self.live.console.print(line, markup=False, highlight=False)
            else:
                self._progress_line()
                console.out(line, highlight=False)
        if time.monotonic() - self._read_at > JOB_REFRESH_S:
            self._refresh()
        if self.live is not None:
            self.live.update(self.view.render())
        elif not self.as_json and time.monotonic() - self._printed_at > PLAIN_EVERY_S:
            self._progress_line()

    def _progress_line(self) -> None:
        """Without a terminal: print the progress line if metrics came since the last one."""
        if self._unprinted:
            console.out(self.view.summary(), highlight=False)
            self._unprinted = False
            self._printed_at = time.monotonic()

    def _finish(self) -> None:
        job = self.view.job
        if self.as_json:
            sys.stdout.write(json.dumps(job, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        if self.live is None:
            self._progress_line()
        if self.view.train_loss:
            console.out(f"loss curve {sparkline(self.view.train_loss, SPARK_WIDTH)}", highlight=False)
        took = (job.get("finished_at") or 0) - (job.get("created_at") or 0)
        if job["status"] == "succeeded":
            console.out(
                f"{job['id']} succeeded in {duration(took)}: {job.get('fine_tuned_model')}", highlight=False
            )
        else:
            message = (job.get("error") or {}).get("message")
            err_console.print(f"{job['id']} {job['status']}" + (f": {message}" if message else ""))


def watch_job(api: ApiClient, job_id: str, *, as_json: bool) -> dict[str, Any]:
    """Show a job live until it ends; return its final state (with `as_json`: events as JSON lines, then
    the final job as one). Raises: ApiError."""
    return Watcher(api, job_id, as_json=as_json).run()
