"""Async Protocols for every external system. Adapters live in `stores/`; `app/` picks them.

Every method either completes within its adapter's timeout or raises `studio.errors.Unavailable`.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from studio.domain.datasets import ValidationLimits, ValidationReport
from studio.domain.deployments import DeploymentStatus
from studio.domain.jobs import JobStatus
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.clients import ApiKey, Client, ClientLimits
from studio.schemas.datasets import Dataset, DatasetStatus, ListOrder, S3Mirror, Upload, UploadPart
from studio.schemas.deployments import Deployment, DeploymentChanges
from studio.schemas.jobs import (
    Checkpoint,
    ClusterResources,
    Job,
    JobChanges,
    JobEvent,
    LaunchStatus,
)
from studio.schemas.queue import QueueSummary


class ClientRepository(Protocol):
    """Clients and API keys (`client_config`, `api_keys`)."""

    async def insert_client(self, client: Client) -> None: ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def get_clients(self, client_ids: list[str]) -> list[Client]:
        """Return the clients of `client_ids` that exist, in no particular order."""
        ...

    async def list_clients(self, *, after: str | None, limit: int) -> list[Client]: ...

    async def set_client_disabled(self, client_id: str, disabled: bool) -> Client | None:
        """Return the updated client, or None when it does not exist."""
        ...

    async def update_client(self, client_id: str, *, name: str, limits: ClientLimits) -> Client | None:
        """Write the client's name and limits; return the updated client, or None when it does not exist."""
        ...

    async def insert_key(self, key: ApiKey) -> None: ...

    async def find_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list_keys(self, client_id: str) -> list[ApiKey]: ...

    async def set_key_disabled(self, *, client_id: str, key_id: str, disabled: bool) -> ApiKey | None:
        """Return the updated key, or None when the client has no such key."""
        ...


class DatasetRepository(Protocol):
    """Datasets (`fine_tuning_datasets`). Every read and write is scoped to one client."""

    async def insert(self, dataset: Dataset) -> None:
        """Raises Conflict when the client already has a dataset with the same sha256."""
        ...

    async def get(self, *, client_id: str, dataset_id: str) -> Dataset | None: ...

    async def find_by_sha256(self, *, client_id: str, sha256: str) -> Dataset | None: ...

    async def list(
        self, *, client_id: str, after: str | None, limit: int, order: ListOrder
    ) -> list[Dataset]: ...

    async def change_status(
        self,
        *,
        dataset: Dataset,
        expected: DatasetStatus,
        lease_until: float | None,
        report: ValidationReport | None = None,
        validated_at: int | None = None,
    ) -> Dataset | None:
        """Write `dataset.status` (and the report) if the stored status is still `expected`.

        Returns the stored dataset, or None when another writer changed it first.
        """
        ...

    async def claim_stale_validation(self, *, now: float, lease_until: float) -> Dataset | None:
        """Take one dataset whose validation is unowned (uploaded or lease expired); None if none."""
        ...

    async def claim_pending_mirror(self, *, now: float, lease_until: float) -> Dataset | None:
        """Take one dataset whose S3 copy is due; None if none."""
        ...

    async def set_mirror(self, *, client_id: str, dataset_id: str, mirror: S3Mirror) -> None: ...

    async def delete(self, *, client_id: str, dataset_id: str) -> bool: ...

    async def used_by_active_job(self, *, client_id: str, dataset_id: str) -> str | None:
        """Return the id of a queued or running job that uses the dataset, or None."""
        ...

    async def usage(self, client_id: str) -> tuple[int, int]:
        """Return the total bytes and the number of the client's datasets, counted from the store."""
        ...

    async def known_ids(self, *, client_id: str, ids: builtins.list[str]) -> set[str]:
        """Return which of `ids` are datasets of the client."""
        ...

    async def paths(self, *, after: str | None, limit: int) -> builtins.list[StoredPath]:
        """Return a page of every client's datasets' local paths, in id order after the id `after`."""
        ...

    async def set_missing(self, *, client_id: str, dataset_id: str, missing_since: int | None) -> None:
        """Mark the dataset's file as missing from disk since then (None: found again)."""
        ...


class UploadRepository(Protocol):
    """Multi-part uploads in progress (`uploads`)."""

    async def insert(self, upload: Upload) -> None: ...

    async def get(self, *, client_id: str, upload_id: str) -> Upload | None: ...

    async def add_part(
        self, *, client_id: str, upload_id: str, part: UploadPart, max_parts: int, max_total_bytes: int
    ) -> Upload | None:
        """Append a part to a pending upload that holds fewer than `max_parts` parts and whose parts
        stay within `max_total_bytes` with it, in one conditional write; None when any of that fails."""
        ...

    async def usage(self, *, client_id: str, now: int) -> tuple[int, int]:
        """Return the number and the declared bytes of the client's pending uploads not expired at `now`."""
        ...

    async def take_expired(self, *, before: int) -> Upload | None:
        """Delete and return one upload (any status) that expired before `before`; None if none.

        Atomic: of two replicas sweeping at once, each upload goes to one.
        """
        ...

    async def pending_ids(self, *, client_id: str, ids: list[str]) -> set[str]:
        """Return which of `ids` are pending uploads of the client."""
        ...

    async def finish(
        self, *, client_id: str, upload_id: str, status: str, file_id: str | None
    ) -> Upload | None:
        """Move a pending upload to `status`; None when it was not pending."""
        ...


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file written by the file store, with the digests computed while it streamed.

    `md5` only where a caller checks one (assembled uploads): it costs as much CPU as SHA-256.
    """

    relative_path: str
    bytes: int
    sha256: str
    md5: str | None


@dataclass(frozen=True, slots=True)
class StoredPath:
    """Where a dataset's bytes should be, for the sweeper's check that they still are."""

    id: str
    client_id: str
    local_path: str
    missing_since: int | None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """One file system under the data directory. `holds_files`: uploaded bytes land on it."""

    path: str
    free_bytes: int
    total_bytes: int
    holds_files: bool


class DiskSpace(Protocol):
    """Free space of the file systems that hold the data directory and the datasets."""

    async def usage(self) -> list[DiskUsage]:
        """Return each distinct file system once."""
        ...


class LeaseRepository(Protocol):
    """Named leases, so that one of several replicas does a periodic piece of work (`leases`)."""

    async def claim(self, name: str, *, holder: str, now: float, until: float) -> bool:
        """Take the lease `name` until `until` if nobody holds it at `now`; return whether it was taken."""
        ...


class FileStore(Protocol):
    """The local (or shared, DFS) directory holding datasets, by paths relative to its root."""

    async def write(self, relative_path: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> WrittenFile:
        """Stream `chunks` to a temporary file, then rename it to `relative_path`.

        Raises:
            PayloadTooLarge: more than `max_bytes` arrived (nothing is left behind).
        """
        ...

    async def concat(self, parts: list[str], relative_path: str) -> WrittenFile:
        """Concatenate stored files into a new one (temporary, then renamed)."""
        ...

    async def move(self, source: str, target: str) -> None: ...

    def read(
        self, relative_path: str, *, offset: int = 0, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]: ...

    async def remove(self, relative_path: str) -> None:
        """Remove a file or a directory tree; missing is fine."""
        ...

    def absolute(self, relative_path: str) -> Path: ...

    async def children(self, relative_path: str) -> list[str]:
        """Return the names of the directories right under `relative_path` ("": the root); [] if none."""
        ...

    async def last_modified(self, relative_path: str) -> float | None:
        """Return the newest modification time of the path or anything under it; None if it is gone."""
        ...


class DatasetValidationRunner(Protocol):
    """Runs the (CPU-bound) streaming validation of a stored file off the event loop."""

    async def validate(
        self, relative_path: str, limits: ValidationLimits, *, tokenizer: str | None = None
    ) -> ValidationReport:
        """Validate the file; count tokens with `tokenizer` (a base model's source) when given."""
        ...


class JobRepository(Protocol):
    """Fine-tuning jobs (`fine_tuning_jobs`)."""

    async def insert(self, job: Job) -> None: ...

    async def get(self, *, client_id: str, job_id: str) -> Job | None: ...

    async def get_any(self, job_id: str) -> Job | None:
        """Return the job whoever owns it (the tracker's view)."""
        ...

    async def list(
        self, *, client_id: str, after: str | None, limit: int, metadata: dict[str, str]
    ) -> list[Job]:
        """Return the client's jobs, newest first, after the job `after`, matching every metadata pair."""
        ...

    async def list_followed(self) -> builtins.list[Job]:
        """Return the jobs the tracker follows, oldest first: validating files, launched or running, or
        cancelled with their Ray job still to stop. Jobs waiting in the queue are not among them."""
        ...

    async def waiting_counts(self) -> dict[str, int]:
        """Return how many jobs each client has waiting in the queue (queued, not launched)."""
        ...

    async def count_waiting(self, client_id: str, *, limit: int) -> int:
        """Return how many jobs the client has waiting in the queue, counting up to `limit` at most."""
        ...

    async def count_ahead(self, job: Job) -> int:
        """Return how many of its client's waiting jobs launch before `job` (a waiting job)."""
        ...

    async def mean_run_seconds(self, *, sample: int) -> float | None:
        """Return the mean run time of the last `sample` succeeded jobs, or None when there are none."""
        ...

    async def put_queue_summary(self, summary: QueueSummary) -> None:
        """Store the tracker's summary of the queue (one document, replaced)."""
        ...

    async def queue_summary(self) -> QueueSummary | None:
        """Return the tracker's last summary of the queue, or None before its first."""
        ...

    async def next_waiting(self, client_id: str) -> Job | None:
        """Return the client's oldest job waiting in the queue, or None."""
        ...

    async def list_fine_tuned(self, client_id: str) -> builtins.list[Job]:
        """Return the client's succeeded jobs that produced a fine-tuned model, newest first."""
        ...

    async def update(self, *, job_id: str, expected: JobStatus, changes: JobChanges) -> Job | None:
        """Write `changes` if the stored status is still `expected`; return the stored job, or None."""
        ...

    async def finished_before(
        self, *, before: int, after: str | None, limit: int
    ) -> builtins.list[Job] | None:
        """Return up to `limit` jobs finished before the unix time `before`, in order of `finished_at`
        (then id), past the job `after`; None when `after` is no longer stored."""
        ...

    async def retention_mark(self) -> str | None:
        """Return the last job whose events the retention sweep deleted, or None before its first."""
        ...

    async def put_retention_mark(self, job_id: str) -> None:
        """Store the last job whose events the retention sweep deleted."""
        ...


class JobEventRepository(Protocol):
    """Job events (`fine_tuning_job_events`)."""

    async def add(self, events: list[JobEvent]) -> None:
        """Store the events; an event whose id is already stored is skipped (adding is idempotent)."""
        ...

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        """Return the job's events newest first, older than the event `after`."""
        ...

    async def since(self, *, job_id: str, seq: int, limit: int) -> builtins.list[JobEvent]:
        """Return the job's events with `seq` above `seq`, oldest first (for live streams)."""
        ...

    async def delete_for_jobs(self, job_ids: builtins.list[str]) -> int:
        """Delete every event of the jobs `job_ids`; return how many were deleted."""
        ...


class CheckpointRepository(Protocol):
    """Checkpoints written by jobs (`fine_tuning_job_checkpoints`)."""

    async def add(self, checkpoint: Checkpoint) -> None:
        """Store the checkpoint; adding one already stored changes nothing."""
        ...

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[Checkpoint]:
        """Return the job's checkpoints, highest step first."""
        ...


class BaseModelRepository(Protocol):
    """The base-model registry (`base_models`)."""

    async def put(self, entry: BaseModelEntry) -> None:
        """Insert or replace the entry with the same id."""
        ...

    async def get(self, model_id: str) -> BaseModelEntry | None: ...

    async def list(self) -> list[BaseModelEntry]: ...

    async def delete(self, model_id: str) -> bool: ...


class DocumentStore(Protocol):
    """The database: repositories plus lifecycle."""

    @property
    def clients(self) -> ClientRepository: ...

    @property
    def datasets(self) -> DatasetRepository: ...

    @property
    def uploads(self) -> UploadRepository: ...

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def job_events(self) -> JobEventRepository: ...

    @property
    def checkpoints(self) -> CheckpointRepository: ...

    @property
    def base_models(self) -> BaseModelRepository: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Cache(Protocol):
    """A shared key-value cache with expiry (Redis)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr_window(self, key: str, *, ttl_s: int) -> int:
        """Increment a counter that expires `ttl_s` after its first increment; return the new value."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class ObjectStore(Protocol):
    """An S3-compatible bucket."""

    @property
    def bucket(self) -> str: ...

    async def put_file(self, *, key: str, path: Path) -> str:
        """Upload `path` to `key` (multipart for big files); return its `s3://` URI."""
        ...

    async def put_directory(self, *, prefix: str, path: Path) -> str:
        """Upload every file under `path` to `<prefix>/<relative path>`; return the prefix's `s3://` URI."""
        ...

    async def get_file(self, *, key: str, path: Path) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ActiveRun:
    """A training run of this installation that the cluster has waiting or running."""

    launch_id: str  # what `TrainingLauncher.submit` returned for it
    job_id: str  # the fine-tuning job it was launched for


class TrainingLauncher(Protocol):
    """Runs the training entrypoint somewhere in the cluster (a Ray job)."""

    async def submit(
        self,
        *,
        submission_id: str,
        config_path: str,
        num_cpus: float,
        num_gpus: float,
        metadata: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> str: ...

    async def status(self, ray_job_id: str) -> LaunchStatus: ...

    async def stop(self, ray_job_id: str) -> bool: ...

    async def logs(self, ray_job_id: str) -> str:
        """Return the run's whole log (read once, when the tracker finishes an attempt)."""
        ...

    async def read_log(self, ray_job_id: str, *, offset: int, max_bytes: int) -> bytes:
        """Return at most `max_bytes` of the run's log from byte `offset` (negative: that many bytes
        before its end): what the tracker reads each round, and `/logs`' tail."""
        ...

    async def release(self, ray_job_id: str) -> bool:
        """Free what an ended run still holds (its status and log with it); return whether it held any."""
        ...

    async def active_runs(self) -> builtins.list[ActiveRun]:
        """Return this installation's runs that the cluster has waiting or running (an actor run that
        ended but still holds its resources counts too): what the tracker compares with the store."""
        ...


class ClusterInfo(Protocol):
    """What the compute cluster has."""

    async def resources(self) -> ClusterResources: ...


class JobNotifier(Protocol):
    """Tells the job tracker that a job needs its attention now rather than at its next round."""

    async def wake(self, client_id: str | None = None) -> None:
        """Start the tracker's next round now; `client_id`: a client that just queued a job."""
        ...


class ModelInspector(Protocol):
    """Reads what a model source says of itself."""

    async def read_config(self, source: str) -> dict[str, Any] | None:
        """Return the `config.json` of a local model directory, or None when `source` is not one."""
        ...


class DeploymentRepository(Protocol):
    """Deployments, which are the routing table (`model_routing`), and the table's version counter."""

    async def insert(self, deployment: Deployment) -> None:
        """Store a new deployment and bump the version.

        Raises:
            Conflict: the model already has a deployment (code `already_deployed`).
        """
        ...

    async def get(self, deployment_id: str) -> Deployment | None: ...

    async def get_by_model(self, model: str) -> Deployment | None: ...

    async def list(self, *, client_id: str | None = None) -> builtins.list[Deployment]:
        """Return the client's deployments (every deployment when None), oldest first."""
        ...

    async def list_own_and_bases(self, client_id: str) -> builtins.list[Deployment]:
        """Return the client's deployments and every base model's (which others may use), oldest first."""
        ...

    async def list_held(self, client_id: str) -> builtins.list[Deployment]:
        """Return the deployments the client created and the shared bases it holds, oldest first
        (a base it created may no longer be held by it: `Deployment.held_by` tells)."""
        ...

    async def add_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        """Add `holder` to a shared base's holders while it is live (deploying or ready); return it
        after, or None when it is no longer live."""
        ...

    async def drop_holder(self, deployment: Deployment, holder: str) -> Deployment | None:
        """Remove `holder` from a shared base's holders; return it after, or None when it did not hold it."""
        ...

    async def list_in(self, statuses: builtins.list[DeploymentStatus]) -> builtins.list[Deployment]:
        """Return the deployments whose status is one of `statuses`, oldest first."""
        ...

    async def list_attached(self, base_deployment: str) -> builtins.list[Deployment]:
        """Return the adapter deployments that run on the deployment `base_deployment`."""
        ...

    async def update(
        self,
        *,
        deployment_id: str,
        expected: DeploymentStatus,
        changes: DeploymentChanges,
        unheld: bool = False,
    ) -> Deployment | None:
        """Write `changes` if the status is still `expected` (and, with `unheld`, no holder holds it) and
        bump the version; return it, or None."""
        ...

    async def remove(self, deployment_id: str) -> bool:
        """Delete the record and bump the version; return whether it existed."""
        ...

    async def version(self) -> int:
        """Return the routing version: it changes whenever a deployment is added, changed or removed."""
        ...


ServerState = Literal["starting", "running", "failed", "absent"]
JsonObject = dict[str, Any]


class ModelServers(Protocol):
    """Starts, follows and stops model servers (Serve applications or Kubernetes Deployments)."""

    async def check(self, deployment: Deployment) -> None:
        """Refuse, before anything is recorded or written, what the target would refuse later.

        Raises:
            InvalidInput: a value the target cannot take. Conflict: the target is not configured, or
                the server's name is taken by something Mini Studio does not manage. Forbidden: the
                target denies what deploying needs.
        """
        ...

    async def deploy(self, deployment: Deployment) -> DeploymentChanges | None:
        """Start (or update) the deployment's model server without waiting for it to be ready.

        Returns what to record of where it lives (Kubernetes: namespace, service URL), or None.
        """
        ...

    async def state(self, deployment: Deployment) -> tuple[ServerState, str]:
        """Return the server's state and, for `failed`, why."""
        ...

    async def ready(self, deployment: Deployment) -> JsonObject:
        """Wait (bounded) until a replica of the running server answers; return what it reports.

        Raises:
            Unavailable: no replica answered in time.
        """
        ...

    async def attach(self, adapter: Deployment) -> None:
        """Load the adapter into its base deployment's server (one replica now, others on first use).

        Raises:
            InvalidInput: the adapter cannot be loaded (the message says why).
        """
        ...

    async def remove(self, deployment: Deployment) -> None:
        """Stop the deployment's server (or detach the adapter); return once asked, not once gone."""
        ...


@dataclass(frozen=True, slots=True)
class InferenceCall:
    """One OpenAI inference request routed to a deployment: `body` is the client's JSON, passed through.

    `model` is the public name (a base model or an `ft:` name); `adapter` is set when it runs as a LoRA
    adapter of its base's server.
    """

    kind: Literal["chat", "completion"]
    model: str
    body: JsonObject
    deployment: Deployment


class InferenceBackend(Protocol):
    """Sends inference requests to the model servers."""

    async def complete(self, call: InferenceCall) -> JsonObject:
        """Return the OpenAI response object.

        Raises:
            InvalidInput: the server refused the request (prompt too long, bad sampling values).
            Unavailable: the server cannot be reached.
        """
        ...

    def stream(self, call: InferenceCall) -> AsyncIterator[str]:
        """Yield the Server-Sent Events as text, one or more whole events (`data: {...}\n\n`) a chunk,
        ending with `data: [DONE]\n\n`.

        Errors before the first event are raised as by `complete`.
        """
        ...


class ModelDemand(Protocol):
    """Publishes how many requests wait for a model server to start, per deployment (what scales a
    Kubernetes deployment up from zero: its KEDA trigger adds this count to vLLM's own load)."""

    def add(self, deployment: Deployment, delta: int) -> None:
        """Count `delta` more (or fewer) requests waiting for `deployment`'s server."""
        ...


class StudioMetrics(Protocol):
    """Mini Studio's own figures for Prometheus: jobs, training tokens, inference, uploads, API errors.

    Every call is cheap, never blocks and never raises: a figure lost is better than a request failed.
    Tags stay of bounded cardinality: model names and client ids, never request or job ids.
    """

    def jobs_in_status(self, counts: dict[str, int]) -> None:
        """Set how many jobs are in each status the tracker follows (`validating_files`, `queued`,
        `running`), as its last round found them."""
        ...

    def job_ended(self, *, status: str, model: str, client_id: str) -> None:
        """Count a job that reached a final status (`succeeded`, `failed`, `cancelled`)."""
        ...

    def job_launched(self, *, model: str, client_id: str, queued_s: float) -> None:
        """Record that a job's first run was launched `queued_s` seconds after the job was created."""
        ...

    def tokens_trained(self, *, model: str, client_id: str, tokens: int) -> None:
        """Count `tokens` more trained tokens of a job on the base model `model`."""
        ...

    def inference_request(self, *, model: str, client_id: str, kind: str, stream: bool, outcome: str) -> None:
        """Count one inference request (`kind`: chat or completion; `outcome`: ok or error)."""
        ...

    def inference_tokens(self, *, model: str, client_id: str, prompt: int, completion: int) -> None:
        """Count the prompt and completion tokens of an answer (from its `usage`)."""
        ...

    def time_to_first_token(self, *, model: str, client_id: str, seconds: float) -> None:
        """Record the time from a streaming request's arrival to its first chunk from the model."""
        ...

    def uploaded_bytes(self, *, client_id: str, size: int) -> None:
        """Count `size` bytes of a client's file (or upload part) written to the data directory."""
        ...

    def api_error(self, *, status: int, code: str | None) -> None:
        """Count one error answer of the API, by HTTP status and OpenAI error `code`."""
        ...
