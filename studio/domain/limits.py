"""Per-client limits: allowed base models, the request-rate window, storage quotas, the disk floor,
deployment caps."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from studio.errors import InsufficientStorage, QuotaExceeded, StorageQuotaExceeded

RATE_WINDOW_S = 60


def model_allowed(allowed_patterns: list[str], model: str) -> bool:
    """Return whether `model` matches one of the client's allowed base-model patterns (`*` = any)."""
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in allowed_patterns)


def rate_window(now_s: float) -> tuple[int, int]:
    """Return the current fixed rate window's index and the seconds left in it."""
    index = int(now_s // RATE_WINDOW_S)
    return index, max(1, int((index + 1) * RATE_WINDOW_S - now_s))


# -- storage quotas ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StorageQuota:
    """A client's storage limits (from its `ClientLimits`)."""

    max_stored_bytes: int
    max_files: int
    max_uploads_in_progress: int


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What a client holds, counted from the store: its files, and its pending uploads, which hold
    a file's place and their declared bytes until they complete, are cancelled or expire."""

    file_bytes: int
    files: int
    uploads: int
    upload_bytes: int

    @property
    def stored_bytes(self) -> int:
        return self.file_bytes + self.upload_bytes

    @property
    def held_files(self) -> int:
        return self.files + self.uploads


def check_storage_quota(
    quota: StorageQuota,
    usage: StorageUsage,
    *,
    add_bytes: int = 0,
    add_files: int = 0,
    add_uploads: int = 0,
    param: str | None = None,
) -> None:
    """Refuse a write that would take the client past one of its storage quotas.

    Raises:
        StorageQuotaExceeded: naming the first quota passed, its value and what the client holds.
    """
    if add_uploads and usage.uploads + add_uploads > quota.max_uploads_in_progress:
        raise StorageQuotaExceeded(
            f"storage quota: this client may have {quota.max_uploads_in_progress} uploads in progress at "
            f"most (max_uploads_in_progress) and has {usage.uploads}; complete or cancel one first",
            quota="max_uploads_in_progress",
            limit=quota.max_uploads_in_progress,
            used=usage.uploads,
            param=param,
        )
    if add_files and usage.held_files + add_files > quota.max_files:
        raise StorageQuotaExceeded(
            f"storage quota: this client may hold {quota.max_files} files at most (max_files) and holds "
            f"{usage.held_files} (pending uploads included); delete some first",
            quota="max_files",
            limit=quota.max_files,
            used=usage.held_files,
            param=param,
        )
    if add_bytes and usage.stored_bytes + add_bytes > quota.max_stored_bytes:
        raise StorageQuotaExceeded(
            f"storage quota: this client may store {quota.max_stored_bytes} bytes at most "
            f"(max_stored_bytes) and holds {usage.stored_bytes} (pending uploads at their declared size); "
            f"this write needs {add_bytes} more. Delete files first",
            quota="max_stored_bytes",
            limit=quota.max_stored_bytes,
            used=usage.stored_bytes,
            param=param,
        )


def bytes_left(quota: StorageQuota, usage: StorageUsage) -> int:
    """Return how many more bytes the client may store (0 when at or past its quota)."""
    return max(0, quota.max_stored_bytes - usage.stored_bytes)


# -- the disk guard ---------------------------------------------------------------------------------


def free_space_floor(*, total_bytes: int, min_free_bytes: int, min_free_percent: float) -> int:
    """Return the free bytes a disk must keep: the larger of the absolute and the relative floor."""
    return max(min_free_bytes, int(total_bytes * min_free_percent / 100))


def check_free_space(*, free_bytes: int, incoming_bytes: int, floor_bytes: int, retry_after_s: int) -> None:
    """Refuse a write of `incoming_bytes` that would leave the disk under its floor.

    Raises:
        InsufficientStorage: (507) saying what is free and what is kept free.
    """
    if free_bytes - incoming_bytes < floor_bytes:
        needs = f" ({incoming_bytes} bytes would be written)" if incoming_bytes else ""
        raise InsufficientStorage(
            f"the server's data disk has {free_bytes} bytes free{needs} and keeps "
            f"{floor_bytes} free for its database: new writes are refused until space is freed",
            code="insufficient_storage",
            retry_after_s=retry_after_s,
        )


# -- deployment caps --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentCaps:
    """A client's caps on what its deployments hold, in total (from its `ClientLimits`)."""

    max_deployments: int
    max_replicas: int
    max_cpus: float
    max_gpus: float


@dataclass(frozen=True, slots=True)
class DeploymentUse:
    """What deployments hold: how many, and their replicas, CPUs and GPUs at their `max_replicas`."""

    deployments: int = 0
    replicas: int = 0
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: DeploymentUse) -> DeploymentUse:
        return DeploymentUse(
            deployments=self.deployments + other.deployments,
            replicas=self.replicas + other.replicas,
            cpus=self.cpus + other.cpus,
            gpus=self.gpus + other.gpus,
        )


def deployment_use(
    *, own_server: bool, running: bool, max_replicas: int, num_cpus: float, num_gpus: float
) -> DeploymentUse:
    """Return what one deployment holds: always one deployment; replicas x resources when it runs a
    server of its own and is not failed (an adapter runs in its base's replicas; a failed one holds
    nothing until it is redeployed)."""
    if not (own_server and running):
        return DeploymentUse(deployments=1)
    return DeploymentUse(
        deployments=1, replicas=max_replicas, cpus=max_replicas * num_cpus, gpus=max_replicas * num_gpus
    )


def check_deployment_caps(
    caps: DeploymentCaps, used: DeploymentUse, asked: DeploymentUse, *, retry_after_s: int = 60
) -> None:
    """Refuse a deployment (or a hold on a shared one) that would take the client past a cap.

    Raises:
        QuotaExceeded: (429) naming the first cap passed, its value, what the client's deployments hold
            now and what the request asks.
    """
    if used.deployments + asked.deployments > caps.max_deployments:
        raise QuotaExceeded(
            f"deployment limit: this client holds {used.deployments} deployments (its own and the shared "
            f"bases it holds) and its limit is {caps.max_deployments} (max_deployments); undeploy one first",
            code="deployment_limit",
            retry_after_s=retry_after_s,
        )
    checks = (
        (
            "replicas",
            "max_deployment_replicas",
            "max_replicas",
            used.replicas,
            asked.replicas,
            caps.max_replicas,
        ),
        ("GPUs", "max_deployment_gpus", "num_gpus", used.gpus, asked.gpus, caps.max_gpus),
        ("CPUs", "max_deployment_cpus", "num_cpus", used.cpus, asked.cpus, caps.max_cpus),
    )
    for what, cap, param, held, more, limit in checks:
        if more > 0 and held + more > limit:
            raise QuotaExceeded(
                f"deployment limit: {cap} is {limit:g} {what} for this client's deployments in total "
                f"(max_replicas x resources per replica, over its own deployments and the shared bases it "
                f"holds); they hold {held:g} now and this request asks {more:g} more; undeploy some or ask "
                "an admin for a higher limit",
                param=param,
                code=f"{cap.removeprefix('max_')}_limit",
                retry_after_s=retry_after_s,
            )
