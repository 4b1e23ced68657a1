"""The model servers of every enabled deployment target, as the ingress and the tracker use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from studio.backends.k8s_servers import KubernetesModelServers
from studio.backends.model_targets import ModelServersByTarget
from studio.backends.serve_models import ServeModelServers
from studio.config import Settings
from studio.services.remote_storage import credentials_env
from studio.serving.spec import ModelStore


def model_store(settings: Settings) -> ModelStore | None:
    """Return where model servers fetch `s3://` models from (None: no bucket configured)."""
    s3 = settings.s3
    if s3.bucket is None:
        return None
    return ModelStore(
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        timeout_s=s3.timeout_s,
        cache_max_bytes=settings.serving.model_cache_max_bytes,
    )


def s3_env(settings: Settings) -> dict[str, str]:
    """Return the S3 credentials model servers get as environment variables (none without a bucket)."""
    return credentials_env(settings.s3) if settings.s3.bucket is not None else {}


def model_servers(settings: Settings) -> ModelServersByTarget:
    """Return the model servers of every enabled target (they deploy models and carry inference)."""
    serving = settings.serving

    def serve_servers() -> ServeModelServers:
        return ServeModelServers(
            scratch_dir=str(settings.serving_scratch_dir),
            models_dir=str(settings.models_dir),
            timeout_s=serving.call_timeout_s,
            stream_batch_ms=serving.stream_batch_ms,
            store=model_store(settings),
            store_env=s3_env(settings),
        )

    factories: dict[str, Callable[[], Any]] = {"serve": serve_servers}
    if settings.k8s.enabled:
        factories["kubernetes"] = lambda: KubernetesModelServers(settings.k8s)
    return ModelServersByTarget(factories)
