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
first. Ray Train's run state goes under `output_dir/ray_train/`.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio.training.config import STOP_FILE, TrainConfig, TrainResult
from studio.training.loop import Report

RAY_TRAIN_DIR = "ray_train"
_DRAIN_POLL_S = 0.2


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
    trainer = TorchTrainer(
        _train_worker,  # type: ignore[arg-type]  # V2 keeps rank 0's return value (stubs say None)
        train_loop_config={"config": config.model_dump(mode="json"), "events": events},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # A fresh name per run: Ray Train resumes its own state from an existing run folder.
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=str(config.output_dir / RAY_TRAIN_DIR),
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

    def report(event: dict[str, Any]) -> None:
        events.put(event)  # blocks until queued: no event is lost when the worker returns

    result = train(worker_config, report=report if rank == 0 else None, should_stop=stop_file.exists)
    return result if rank == 0 else None
