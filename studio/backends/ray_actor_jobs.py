"""`TrainingLauncher` without the Jobs API: each run is a detached, named Ray actor owning the process.

Ray's Jobs API lives in the dashboard process; a cluster started without it could not train. Here the
run is the actor `<submission id>` in Mini Studio's namespace (the dashboard lists it under Actors). The
actor holds the run's CPUs and GPUs (Ray sets `CUDA_VISIBLE_DEVICES` for it; the process inherits it) and
its constructor starts what a Ray job would: `python -m studio.training --config <path>`, with stdout and
stderr in `<Ray session logs>/studio-runs/<submission id>.log` on the actor's node.

Lifetime: the actor outlives its process, so the run's status and log stay readable until the tracker
has read its end and calls `release`; it holds the run's resources meanwhile, so it also exits by itself
`idle_ttl_s` (10 minutes) after the process ended, 10 s after a stopped one (whose end nobody reads: its
CPUs and GPUs go to the next run). `stop` ends the process (SIGTERM, then SIGKILL of its process group
after `stop_wait_s`), not the actor. Killing the actor (`release`, `ray.kill`, its node lost) kills the
process group too, as the Jobs API's supervisor does, and the run becomes NotFound.

Launch ids are `actor:<submission id>`, so a caller holding one knows which launcher follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ray

from studio.backends.log_files import read_range
from studio.backends.ray_calls import in_thread
from studio.backends.ray_jobs import JOB_ENV
from studio.domain.jobs import ACTOR_ID_PREFIX
from studio.errors import NotFound, Unavailable
from studio.ports import ActiveRun
from studio.schemas.jobs import LaunchState, LaunchStatus

T = TypeVar("T")

STOP_WAIT_S = float(JOB_ENV["RAY_JOB_STOP_WAIT_TIME_S"])
# An ended run's actor still holds its CPUs and GPUs: the tracker releases it once it has read the end;
# these bound how long it can linger when nobody does (a stopped run's end matters to no one).
IDLE_TTL_S = 600.0
STOPPED_TTL_S = 10.0
LOG_CHUNK_BYTES = 4 << 20
# The directory holding the `studio` package: the process's cwd and first PYTHONPATH entry.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# A run actor's name: the submission id `<job id>-attempt-<n>` the tracker gives each attempt.
RUN_NAME = re.compile(r"(?P<job>.+)-attempt-\d+")
# GCS actor states of an actor not yet started (waiting for resources or a node).
NOT_STARTED = frozenset({"DEPENDENCIES_UNREADY", "PENDING_CREATION"})


def _actor_state(handle: Any) -> str:
    """Return the GCS state of an actor (`PENDING_CREATION`, `ALIVE`, `DEAD`, ...); blocking."""
    return str(ray._private.state.actors(actor_id=handle._actor_id.hex()).get("State", ""))


def actor_launch_id(submission_id: str) -> str:
    """Return the launch id of the run `submission_id` under this launcher."""
    return ACTOR_ID_PREFIX + submission_id


def actor_name(launch_id: str) -> str:
    """Return the actor name (the submission id) of a launch id, prefixed or not."""
    return launch_id.removeprefix(ACTOR_ID_PREFIX)


def _log_root(log_dir: str | None) -> Path:
    """Return the runs' log directory: `log_dir`, else the Ray session's logs, else the temp dir."""
    if log_dir:
        return Path(log_dir)
    try:  # No public API names the session's log dir; the temp dir serves if this one moves.
        node: Any = ray._private.worker._global_node
        return Path(node.get_logs_dir_path()) / "studio-runs"
    except Exception:
        return Path(tempfile.gettempdir()) / "studio-runs"


class TrainingRun:
    """The actor: one training process, its log and its end. Methods run in threads (max_concurrency)."""

    def __init__(
        self,
        *,
        submission_id: str,
        config_path: str,
        python: str | None,
        env: dict[str, str],
        metadata: dict[str, str],
        log_dir: str | None,
        stop_wait_s: float,
        idle_ttl_s: float,
    ) -> None:
        self._lock = threading.Lock()
        self._stop_wait_s = stop_wait_s
        self._idle_ttl_s = idle_ttl_s
        self._stop_requested = False
        self._start_error: str | None = None
        self._node = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self._log_path = _log_root(log_dir) / (re.sub(r"[^A-Za-z0-9_.-]", "_", submission_id) + ".log")
        argv = [python or sys.executable, "-m", "studio.training", "--config", config_path]
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: subprocess.Popen[bytes] | None = None
        try:
            self._process = self._start(argv, env, header=f"{submission_id} {json.dumps(metadata)}")
        except OSError as exc:
            self._start_error = f"could not start the training process: {exc}"
        threading.Thread(target=self._watch, name="training-run-watch", daemon=True).start()

    def _start(self, argv: list[str], env: dict[str, str], *, header: str) -> subprocess.Popen[bytes]:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        python_path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
        # RAY_ADDRESS: a Ray Train run's `ray.init()` joins this cluster, as in a Ray job.
        ray_address = str(ray.get_runtime_context().gcs_address)
        full_env = {**os.environ, **JOB_ENV, "RAY_ADDRESS": ray_address, "PYTHONPATH": python_path, **env}
        # Append: a log is never cut, whatever happens to its name later.
        with self._log_path.open("ab") as log:
            log.write(f"Mini Studio run {header}: {shlex.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=SOURCE_ROOT,
                start_new_session=True,  # its own process group: the SIGKILL after a stop takes them all
            )
        # Fate sharing, as Ray's job supervisor does it: if this actor's process dies (killed, node
        # lost) while the run lives, a watcher outside both kills the run's process group.
        watcher = (
            f"while kill -0 {os.getpid()} && kill -0 {process.pid}; do sleep 1; done 2>/dev/null; "
            f"kill -0 {os.getpid()} 2>/dev/null || kill -9 -{process.pid} 2>/dev/null"
        )
        try:
            self._watcher = subprocess.Popen(
                ["sh", "-c", watcher],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:  # never a run that could outlive its actor
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        return process

    def _watch(self) -> None:
        """Reap the process and its watcher, then end this actor `idle_ttl_s` later (a call to itself)."""
        if self._process is not None:
            self._process.wait()
        if self._watcher is not None:
            self._watcher.wait()  # it sees the process gone within a second
        time.sleep(STOPPED_TTL_S if self._stop_requested else self._idle_ttl_s)
        ray.get_runtime_context().current_actor.expire.remote()

    def expire(self) -> None:
        """End this actor; called by the actor itself once its idle time is over."""
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]

    def status(self) -> tuple[LaunchState, str]:
        """Return the run's state and a message; a failure's message says `exit code N`."""
        if self._process is None:
            return "failed", self._start_error or "the training process did not start"
        code = self._process.returncode
        if code is None:
            return "running", f"process {self._process.pid} on {self._node}, log {self._log_path}"
        if self._stop_requested:
            return "stopped", f"stopped; the training process ended with exit code {code}"
        if code == 0:
            return "succeeded", "the training process ended with exit code 0"
        killed = f" (killed by {signal.Signals(-code).name})" if -code in signal.valid_signals() else ""
        return "failed", f"the training process failed with exit code {code}{killed}; log:\n{self._tail()}"

    def stop(self) -> bool:
        """SIGTERM the process (SIGKILL its group `stop_wait_s` later); return whether it was running."""
        process = self._process
        with self._lock:
            if process is None or process.returncode is not None:
                return False
            if not self._stop_requested:
                self._stop_requested = True
                process.send_signal(signal.SIGTERM)
                timer = threading.Timer(self._stop_wait_s, self._kill, args=(process,))
                timer.daemon = True
                timer.start()
            return True

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def read_log(self, offset: int, max_bytes: int) -> bytes:
        """Return at most `max_bytes` of the log from byte `offset` (negative: from its end)."""
        return read_range(self._log_path, offset, max_bytes)

    def _tail(self, max_bytes: int = 2000) -> str:
        text = self.read_log(-max_bytes, max_bytes).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-20:])


_TrainingRunActor: Any = ray.remote(TrainingRun)


class RayActorLauncher:
    """Runs training as detached named actors in `namespace` (the settings' Ray namespace).

    Needs a connected Ray (`ray.init`), as in the tracker actor. Every Ray call runs in a worker thread
    or as an awaited ObjectRef, under `timeout_s`.
    """

    def __init__(
        self,
        *,
        namespace: str,
        python: str | None = None,
        log_dir: str | None = None,
        timeout_s: float = 30.0,
        stop_wait_s: float = STOP_WAIT_S,
        idle_ttl_s: float = IDLE_TTL_S,
    ) -> None:
        self._namespace = namespace
        self._python = python
        self._log_dir = log_dir
        self._timeout_s = timeout_s
        self._stop_wait_s = stop_wait_s
        self._idle_ttl_s = idle_ttl_s

    async def _blocking(self, func: Callable[[], T]) -> T:
        return await in_thread(func, timeout_s=self._timeout_s)

    async def _ask(self, launch_id: str, call: Callable[[], Any]) -> Any:
        """Await an actor method call; a dead actor is NotFound."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call()
        except TimeoutError as exc:
            raise Unavailable(f"the run {launch_id} did not answer in time") from exc
        except ray.exceptions.ActorUnavailableError as exc:
            raise Unavailable(f"the run {launch_id} is unreachable: {exc}") from exc
        except ray.exceptions.RayActorError as exc:
            raise NotFound(f"the run {launch_id} no longer exists: {exc}", code="ray_job_not_found") from exc

    async def _find(self, launch_id: str) -> tuple[Any, bool] | None:
        """Return the run's actor and whether it has started, or None when there is none."""

        def find() -> tuple[Any, str] | None:
            try:
                handle = ray.get_actor(actor_name(launch_id), namespace=self._namespace)
            except ValueError:
                return None
            return handle, _actor_state(handle)

        found = await self._blocking(find)
        if found is None or found[1] == "DEAD":
            return None
        return found[0], found[1] not in NOT_STARTED

    async def _get(self, launch_id: str) -> tuple[Any, bool]:
        found = await self._find(launch_id)
        if found is None:
            raise NotFound(f"no run {launch_id!r}", code="ray_job_not_found")
        return found

    async def submit(
        self,
        *,
        submission_id: str,
        config_path: str,
        num_cpus: float,
        num_gpus: float,
        metadata: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> str:
        """Start the training run as the actor `submission_id`; return `actor:<submission_id>`.

        Submitting an id whose actor exists returns its id and starts nothing: a tracker that died
        between submitting and recording adopts the run. (Once an ended run's actor has expired, the
        same id would start again.) `metadata` goes to the log's first line.

        Raises:
            Unavailable: Ray did not register the actor in time.
        """
        actor = _TrainingRunActor.options(
            name=submission_id,
            namespace=self._namespace,
            get_if_exists=True,  # race-free in the GCS: one actor per name
            lifetime="detached",
            max_restarts=0,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_concurrency=4,  # status and logs answer while a read is running
            scheduling_strategy="DEFAULT",  # anywhere, not in a caller's placement group
        )

        def create() -> None:
            actor.remote(
                submission_id=submission_id,
                config_path=config_path,
                python=self._python,
                env=env or {},
                metadata=metadata,
                log_dir=self._log_dir,
                stop_wait_s=self._stop_wait_s,
                idle_ttl_s=self._idle_ttl_s,
            )

        await self._blocking(create)
        return actor_launch_id(submission_id)

    async def has_run(self, submission_id: str) -> bool:
        """Return whether the actor of `submission_id` exists (waiting, running or ended).

        Raises:
            Unavailable: the cluster did not answer in time.
        """
        return await self._find(submission_id) is not None

    async def status(self, ray_job_id: str) -> LaunchStatus:
        """Return the run's state: pending until the actor starts, then what its process did.

        Raises:
            NotFound: no such actor (it was released, killed, expired, or its node was lost).
        """
        handle, started = await self._get(ray_job_id)
        if not started:
            return LaunchStatus(state="pending", message="waiting for the run's resources")
        state, message = await self._ask(ray_job_id, lambda: handle.status.remote())
        return LaunchStatus(state=state, message=message)

    async def stop(self, ray_job_id: str) -> bool:
        """Stop the run's process (its actor stays); return whether it was running.

        A run still waiting for resources is released instead. Raises NotFound.
        """
        handle, started = await self._get(ray_job_id)
        if not started:
            return await self.release(ray_job_id)
        return bool(await self._ask(ray_job_id, lambda: handle.stop.remote()))

    async def release(self, ray_job_id: str) -> bool:
        """Kill the run's actor, and with it a process still running; return whether there was one."""
        found = await self._find(ray_job_id)
        if found is None:
            return False
        await self._blocking(lambda: ray.kill(found[0]))
        return True

    async def active_runs(self) -> list[ActiveRun]:
        """Return the run actors alive in this installation's namespace (waiting, running, or ended and
        still holding their resources). Raises Unavailable."""

        def alive() -> list[ActiveRun]:
            named = ray.util.list_named_actors(all_namespaces=True)
            runs = []
            for actor in named:
                found = RUN_NAME.fullmatch(actor["name"])
                if actor["namespace"] != self._namespace or found is None:
                    continue
                try:
                    handle = ray.get_actor(actor["name"], namespace=self._namespace)
                except ValueError:  # gone since the list
                    continue
                if _actor_state(handle) != "DEAD":
                    runs.append(ActiveRun(launch_id=actor_launch_id(actor["name"]), job_id=found["job"]))
            return runs

        return await self._blocking(alive)

    async def read_log(self, ray_job_id: str, *, offset: int = 0, max_bytes: int = 1 << 20) -> bytes:
        """Return at most `max_bytes` of the run's log from byte `offset` (negative: that many bytes
        before its end); b"" before the run starts.

        Raises:
            NotFound: no such actor.
        """
        handle, started = await self._get(ray_job_id)
        if not started:
            return b""
        data: bytes = await self._ask(ray_job_id, lambda: handle.read_log.remote(offset, max_bytes))
        return data

    async def logs(self, ray_job_id: str) -> str:
        """Return the run's whole log (UTF-8, invalid bytes replaced). Raises NotFound."""
        chunks: list[bytes] = []
        offset = 0
        while True:
            chunk = await self.read_log(ray_job_id, offset=offset, max_bytes=LOG_CHUNK_BYTES)
            chunks.append(chunk)
            offset += len(chunk)
            if len(chunk) < LOG_CHUNK_BYTES:
                return b"".join(chunks).decode("utf-8", errors="replace")
