"""Async Protocols for every external system, by feature. Adapters live in `stores/` and `backends/`;
`app/` picks them.

Every method either completes within its adapter's timeout or raises `studio.errors.Unavailable`.
"""

from __future__ import annotations

from studio.ports.clients import ClientRepository
from studio.ports.datasets import DatasetRepository, DatasetValidationRunner, UploadRepository
from studio.ports.jobs import (
    ActiveRun,
    BaseModelRepository,
    CheckpointRepository,
    ClusterInfo,
    JobEventRepository,
    JobNotifier,
    JobRepository,
    ModelInspector,
    TrainingLauncher,
)
from studio.ports.metrics import StudioMetrics
from studio.ports.serving import (
    DeploymentRepository,
    InferenceBackend,
    InferenceCall,
    JsonObject,
    ModelDemand,
    ModelServers,
    ServerState,
)
from studio.ports.storage import (
    Cache,
    DiskSpace,
    DiskUsage,
    FileStore,
    LeaseRepository,
    ObjectStore,
    StoredPath,
    WrittenFile,
)
from studio.ports.store import DocumentStore

__all__ = [
    "ActiveRun",
    "BaseModelRepository",
    "Cache",
    "CheckpointRepository",
    "ClientRepository",
    "ClusterInfo",
    "DatasetRepository",
    "DatasetValidationRunner",
    "DeploymentRepository",
    "DiskSpace",
    "DiskUsage",
    "DocumentStore",
    "FileStore",
    "InferenceBackend",
    "InferenceCall",
    "JobEventRepository",
    "JobNotifier",
    "JobRepository",
    "JsonObject",
    "LeaseRepository",
    "ModelDemand",
    "ModelInspector",
    "ModelServers",
    "ObjectStore",
    "ServerState",
    "StoredPath",
    "StudioMetrics",
    "TrainingLauncher",
    "UploadRepository",
    "WrittenFile",
]
