"""The model servers of every enabled deployment target, as the ingress and the tracker use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from studio.backends.k8s_servers import KubernetesModelServers
from studio.backends.model_targets import ModelServersByTarget
from studio.backends.serve_models import ServeModelServers
from studio.config import Settings


def model_servers(settings: Settings) -> ModelServersByTarget:
    """Return the model servers of every enabled target (they deploy models and carry inference)."""
    serving = settings.serving

    def serve_servers() -> ServeModelServers:
        return ServeModelServers(
            scratch_dir=str(settings.serving_scratch_dir),
            models_dir=str(settings.models_dir),
            timeout_s=serving.call_timeout_s,
            stream_batch_ms=serving.stream_batch_ms,
        )

    factories: dict[str, Callable[[], Any]] = {"serve": serve_servers}
    if settings.k8s.enabled:
        factories["kubernetes"] = lambda: KubernetesModelServers(settings.k8s)
    return ModelServersByTarget(factories)
