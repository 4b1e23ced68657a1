"""`ModelDemand` as a Ray metric: the requests this process holds for each model server still starting.

Ray exports it (prefixed `ray_`) from every node's metrics agent, where a cluster's Prometheus scrapes
it; a Kubernetes deployment's KEDA trigger adds it to vLLM's load (`k8s_manifests.load_query`), so a
request for a deployment scaled to zero is what starts its first pod.
"""

from __future__ import annotations

from collections import Counter

from ray.util.metrics import Gauge

from studio.schemas.deployments import Deployment

METRIC = "mini_studio_model_waiting_requests"


class RayModelDemand:
    def __init__(self) -> None:
        self._gauge = Gauge(
            METRIC,
            description="Requests an ingress replica holds while a model server has no ready replica.",
            tag_keys=("model", "model_namespace", "model_server"),
        )
        self._waiting: Counter[str] = Counter()

    def add(self, deployment: Deployment, delta: int) -> None:
        self._waiting[deployment.id] += delta
        tags = {
            "model": deployment.model,
            "model_namespace": deployment.namespace or "",
            "model_server": deployment.app_name or "",
        }
        self._gauge.set(max(0, self._waiting[deployment.id]), tags=tags)
        if self._waiting[deployment.id] <= 0:
            del self._waiting[deployment.id]
