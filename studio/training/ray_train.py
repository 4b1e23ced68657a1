"""Run `train` on a Ray Train (V2) worker group: data-parallel DDP over `num_workers` workers.

The only module of `studio.training` that imports Ray, and only inside `fit`, because Ray reads its
logging settings once, when it is first imported. The driver (`python -m studio.training` inside
a Ray job) joins the job's cluster; Ray Train starts the workers, sets up the `torch.distributed`
process group (gloo on CPU, NCCL on GPU) and runs `train` on each of them.

Events: rank 0 puts each report on a Ray queue (an actor with no CPU) and the driver prints them, so
they reach the job log in order, before the result, and whatever node rank 0 runs on; the driver
does not depend on Ray forwarding worker stdout for them.

Stop: the driver's SIGTERM handler writes `output_dir/STOP`; every rank polls that file between
steps and the ranks agree on the stop step (see `loop.train`), so rank 0 can checkpoint. On more than
one node `output_dir` must be shared storage (it holds checkpoints that every rank resumes from).

Paths: workers run in Ray Train's own working directory, so the config's paths are made absolute
first.

The dashboard's Train view: the run is named after the job (`output_dir`'s name, the job id: the
tracker puts each job's files in `<jobs dir>/<job id>`), its storage is the jobs directory, so the
run's folder is `output_dir` itself. Every rank calls `ray.train.report` once per step (a barrier
in Ray Train V2, so every rank must), rank 0 with the metrics of the steps since its last report
and, when it wrote one, the latest checkpoint. The checkpoint is registered where it lies, inside
the run's folder (`checkpoint_upload_mode=NO_UPLOAD`): nothing is copied, storage is not doubled.
Ray Train's own state of an earlier attempt (`checkpoint_manager_snapshot.json`) is removed before
a run, so each attempt is a fresh Ray Train run; the loop resumes from its own checkpoints.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio.training.config import STOP_FILE, TrainConfig, TrainResult
from studio.training.loop import Report

_DRAIN_POLL_S = 0.2
# Ray Train's record of the checkpoints reported to it, in the run's folder (`output_dir`).
RAY_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"


def fit(config: TrainConfig, *, report: Report) -> TrainResult:
    """Train `config` on `config.num_workers` Ray Train workers; return rank 0's result.

    Connects to the cluster named by RAY_ADDRESS (set by Ray for a job's entrypoint) or starts a
    local one, unless this process is already connected. `report` is called in this process, in
    order, with every event of rank 0, all of them before `fit` returns. The SIGTERM handler in
    place before the call is kept (`ray.init` would replace it with one that exits at once).

    Raises:
        ValueError: a worker raised ValueError (unusable data or values): the user's error.
        RuntimeError: the run failed otherwise (a worker crashed or raised, Ray Train failed).
    """
    # Read once by Ray at import: every log line stays as printed (no dedup merging, no colour
    # codes), driver output is flushed, and Ray Train V2 (whose result carries rank 0's return).
    os.environ["RAY_DEDUP_LOGS"] = "0"
    os.environ["RAY_COLOR_PREFIX"] = "0"
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"
    os.environ.setdefault("RAY_FLUSH_DRIVER_LOGS", "1")
    # The run, its attempts and workers in the dashboard's Train view (off by default in Ray 2.60).
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    import ray

    config = _absolute(config)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        handler = signal.getsignal(signal.SIGTERM)
        ray.init()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    try:
        return _fit(config, report)
    finally:
        if owns_ray:
            ray.shutdown()


def _absolute(config: TrainConfig) -> TrainConfig:
    """Return `config` with every path absolute (workers do not run in this working directory)."""
    update: dict[str, Any] = {
        "training_file": config.training_file.resolve(),
        "output_dir": config.output_dir.resolve(),
        "validation_file": config.validation_file.resolve() if config.validation_file else None,
        "models_dir": config.models_dir.resolve() if config.models_dir else None,
    }
    base = Path(config.base_model).expanduser()
    if base.is_dir():
        update["base_model"] = str(base.resolve())
    return config.model_copy(update=update)


def _fit(config: TrainConfig, report: Report) -> TrainResult:
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    resources: dict[str, float] = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = 1
    # No CPU: it must never compete with the workers for the job's CPUs.
    events = Queue(actor_options={"num_cpus": 0})
    # A fresh Ray Train run per attempt (see the module's docstring).
    (config.output_dir / RAY_TRAIN_SNAPSHOT).unlink(missing_ok=True)
    trainer = TorchTrainer(
        _train_worker,  # type: ignore[arg-type]  # V2 keeps rank 0's return value (stubs say None)
        train_loop_config={"config": config.model_dump(mode="json"), "events": events},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name(config),
            storage_path=str(config.output_dir.parent),
            # A failed run is not retried here: a user error would fail again, and the supervisor
            # decides about retries of the whole job (the loop resumes from its checkpoint).
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        with _relayed(events, report):
            result = trainer.fit()
    except TrainingFailedError as exc:
        raise _translate(exc) from exc
    finally:
        events.shutdown()
    outcome = getattr(result, "return_value", None)  # V2's Result (mypy sees V1's, without it)
    if not isinstance(outcome, TrainResult):
        raise RuntimeError(f"rank 0 of the Ray Train run returned {type(outcome).__name__}, no TrainResult")
    return outcome


@contextmanager
def _relayed(events: Any, report: Report) -> Iterator[None]:
    """Call `report` with each event put on `events`, from a thread, until every one is relayed."""
    done = threading.Event()

    def relay() -> None:
        while True:
            try:
                report(events.get(timeout=_DRAIN_POLL_S))
            except queue.Empty:  # ray.util.queue.Empty subclasses it
                if done.is_set():
                    return

    thread = threading.Thread(target=relay, name="ray-train-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        # The workers have returned: every put has completed, so an empty poll after this is the end.
        done.set()
        thread.join()


def run_name(config: TrainConfig) -> str:
    """Return the Ray Train run's name: the job id, which names the job's folder (`output_dir`)."""
    return config.output_dir.name


def _translate(exc: Exception) -> Exception:
    """Return the error to raise for a failed run: ValueError for a worker's ValueError, else RuntimeError."""
    # Ray Train V2 unwraps each worker's exception into WorkerGroupError.worker_failures (rank ->
    # exception); a ControllerError has none.
    failures = sorted((getattr(exc, "worker_failures", None) or {}).items())
    user = next((failure for _, failure in failures if isinstance(failure, ValueError)), None)
    if user is not None:
        return ValueError(str(user))
    if failures:
        rank, failure = failures[0]
        name = type(failure).__name__
        return RuntimeError(f"Ray Train worker {rank} failed: {name}: {_first_line(failure)}")
    return RuntimeError(f"Ray Train run failed: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _train_worker(loop_config: dict[str, Any]) -> TrainResult | None:
    """Run `train` as one Ray Train worker; return the result on rank 0, None on the others."""
    import ray.train
    import torch

    from studio.training.loop import disable_progress_bars, train

    disable_progress_bars()
    config = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = "cpu"
    if config.use_gpu:
        from ray.train.torch import get_device

        index = get_device().index
        device = "cuda" if index is None else f"cuda:{index}"
    worker_config = config.model_copy(update={"rank": rank, "world_size": world_size, "device": device})
    events = loop_config["events"]
    stop_file = config.output_dir / STOP_FILE
    steps = StepReports()

    def report(event: dict[str, Any]) -> None:
        events.put(event)  # blocks until queued: no event is lost when the worker returns
        steps.add(event)

    def should_stop() -> bool:
        # Polled once per step on every rank, in step: where every rank can report to Ray Train.
        steps.send()
        return stop_file.exists()

    result = train(worker_config, report=report if rank == 0 else None, should_stop=should_stop)
    steps.send()  # the last steps, and the checkpoint a stop wrote
    return result if rank == 0 else None


class StepReports:
    """What rank 0 reported since its last `ray.train.report`: the metrics merged (later steps win), and
    the last checkpoint. Other ranks hold nothing and report empty metrics, as Ray Train requires."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.checkpoint: str | None = None

    def add(self, event: dict[str, Any]) -> None:
        if event.get("type") == "metrics":
            self.metrics.update({k: v for k, v in event.items() if k != "type"})
        elif event.get("type") == "checkpoint" and event.get("path"):
            self.checkpoint = str(event["path"])

    def send(self) -> None:
        """Call `ray.train.report` (every rank, the same number of times) and start afresh."""
        import ray.train
        from ray.train import CheckpointUploadMode

        checkpoint = ray.train.Checkpoint.from_directory(self.checkpoint) if self.checkpoint else None
        ray.train.report(
            self.metrics, checkpoint=checkpoint, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD
        )
        self.metrics, self.checkpoint = {}, None
