"""The four Kubernetes objects that serve one model with vLLM: Deployment, Service, PVC, KEDA ScaledObject.

Everything is checked (names, quantities, replica bounds) before anything is rendered, so bad input is an
`InvalidInput` before any API call. The core objects are the official client's models; the ScaledObject
(a KEDA custom resource, `keda.sh/v1alpha1`) is a plain dict. `wire()` gives the JSON the API server sees.

Every object carries `app.kubernetes.io/managed-by: mini-studio`: the backend never touches an object of
the same name without it. The model id itself, which need not be a valid label value, is an annotation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubernetes import client

from studio.config import K8sSettings
from studio.domain import k8s_names
from studio.errors import InvalidInput

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "mini-studio"
NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
CLIENT_LABEL: Final = "mini-studio.io/client"
MODEL_LABEL: Final = "mini-studio.io/model"
MODEL_ANNOTATION: Final = "mini-studio.io/model-id"
SERVED_NAME_ANNOTATION: Final = "mini-studio.io/served-model-name"
# The hash of the desired manifest: an apply whose hash matches the live object's changes nothing.
SPEC_HASH_ANNOTATION: Final = "mini-studio.io/spec-hash"
KEDA_GROUP: Final = "keda.sh"
KEDA_VERSION: Final = "v1alpha1"
SCALED_OBJECTS: Final = "scaledobjects"
PORT: Final = 8000
CACHE_MOUNT: Final = "/models"
GPU_RESOURCE: Final = "nvidia.com/gpu"
_API = client.ApiClient()


@dataclass(frozen=True, kw_only=True)
class ModelServerSpec:
    """What to serve and with what. Quantities are Kubernetes strings (`"500m"`, `"16Gi"`)."""

    model: str  # a Hugging Face id or a path inside the image / on the cache volume
    served_model_name: str
    client_id: str
    max_model_len: int | None = None
    dtype: str | None = None
    gpu_memory_utilization: float | None = None
    extra_args: tuple[str, ...] = ()
    # Fine-tunes: the base model is served with LoRA enabled; adapters are loaded at runtime, or at
    # start from `lora_modules` ((name, path in the pod), ...).
    enable_lora: bool = False
    lora_modules: tuple[tuple[str, str], ...] = ()
    # What the objects are named and labelled after (default: served_model_name); a LoRA fine-tune's
    # server serves its base under the base's name and is named after the fine-tune.
    deployment_model: str | None = None
    max_lora_rank: int | None = None
    min_replicas: int = 0
    max_replicas: int = 1
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    gpus: int = 0
    # One engine over tp x pp workers, one GPU each (all in the pod: vLLM's multiprocessing executor).
    # None: every GPU of the pod is a tensor-parallel worker; pp 1.
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    quantization: Literal["fp8"] | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    # None: from settings.
    cache_size: str | None = None
    storage_class: str | None = None
    image: str | None = None
    # ReadWriteOnce binds the cache to one node; replicas spread over nodes need ReadWriteMany.
    cache_access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelServerManifests:
    """The rendered objects, all named `name` in `namespace`."""

    name: str
    namespace: str
    deployment: client.V1Deployment
    service: client.V1Service
    pvc: client.V1PersistentVolumeClaim
    scaled_object: dict[str, Any]

    @property
    def service_url(self) -> str:
        """The in-cluster base URL of the model server's OpenAI API."""
        return f"http://{self.name}.{self.namespace}.svc.cluster.local:{PORT}"


def wire(obj: object) -> dict[str, Any]:
    """Return `obj` (a client model or a dict) as the JSON object the API server receives."""
    data = _API.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    if not isinstance(data, dict):  # pragma: no cover - every manifest is an object
        raise TypeError(f"not a Kubernetes object: {type(obj).__name__}")
    return data


def spec_hash(manifest: dict[str, Any]) -> str:
    """Return a stable hash of `manifest` without its own hash annotation."""
    data = json.loads(json.dumps(manifest, sort_keys=True))
    data.get("metadata", {}).get("annotations", {}).pop(SPEC_HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def validate_spec(spec: ModelServerSpec, settings: K8sSettings) -> None:
    """Check every field that ends up in a manifest.

    Raises:
        InvalidInput: naming the field at fault.
    """
    if not spec.model.strip():
        raise InvalidInput("the model must not be empty", param="model")
    if not spec.served_model_name.strip() or any(ch.isspace() for ch in spec.served_model_name):
        raise InvalidInput(
            "served_model_name must be a non-empty name without spaces", param="served_model_name"
        )
    if not spec.client_id.strip():
        raise InvalidInput("client_id must not be empty", param="client_id")
    if not 0 <= spec.min_replicas <= spec.max_replicas:
        raise InvalidInput("min_replicas must be from 0 to max_replicas", param="min_replicas")
    if not 1 <= spec.max_replicas <= 1000:
        raise InvalidInput("max_replicas must be from 1 to 1000", param="max_replicas")
    if spec.max_model_len is not None and spec.max_model_len < 16:
        raise InvalidInput("max_model_len must be at least 16", param="max_model_len")
    if spec.gpu_memory_utilization is not None and not 0 < spec.gpu_memory_utilization <= 1:
        raise InvalidInput("gpu_memory_utilization must be in (0, 1]", param="gpu_memory_utilization")
    if spec.max_lora_rank is not None and not spec.enable_lora:
        raise InvalidInput("max_lora_rank needs enable_lora", param="max_lora_rank")
    if spec.max_lora_rank is not None and spec.max_lora_rank not in (8, 16, 32, 64, 128, 256, 320, 512):
        raise InvalidInput("max_lora_rank must be one of vLLM's 8..512", param="max_lora_rank")
    for name in ("cpu_request", "cpu_limit"):
        value = getattr(spec, name)
        if value is not None:
            k8s_names.validate_cpu(value, field=name)
    for name in ("memory_request", "memory_limit"):
        value = getattr(spec, name)
        if value is not None:
            k8s_names.validate_memory(value, field=name)
    k8s_names.check_request_within_limit(spec.cpu_request, spec.cpu_limit, field="cpu")
    k8s_names.check_request_within_limit(spec.memory_request, spec.memory_limit, field="memory")
    k8s_names.validate_gpus(spec.gpus)
    _validate_parallel(spec)
    k8s_names.validate_memory(spec.cache_size or settings.cache_size, field="cache_size")
    storage_class = spec.storage_class or settings.storage_class
    if storage_class is not None:
        k8s_names.validate_object_name(storage_class, field="storage_class")
    for key in spec.env:
        if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise InvalidInput(f"env name {key!r} is not a valid variable name", param="env")


def parallel_sizes(spec: ModelServerSpec) -> tuple[int, int]:
    """Return the (tensor, pipeline) parallel sizes: by default every GPU of the pod is a tensor-parallel
    worker, as on the Serve target (`studio.domain.serving_plan.parallel_layout`)."""
    pp = spec.pipeline_parallel_size or 1
    tp = spec.tensor_parallel_size or (spec.gpus // pp if spec.gpus > 1 else 1)
    return tp, pp


def _validate_parallel(spec: ModelServerSpec) -> None:
    for name in ("tensor_parallel_size", "pipeline_parallel_size"):
        value = getattr(spec, name)
        if value is not None and not 1 <= value <= k8s_names.MAX_GPUS:
            raise InvalidInput(f"{name} must be from 1 to {k8s_names.MAX_GPUS}", param=name)
    tp, pp = parallel_sizes(spec)
    if spec.gpus and tp * pp != spec.gpus:
        raise InvalidInput(
            f"tensor_parallel_size x pipeline_parallel_size ({tp} x {pp}) must equal gpus ({spec.gpus}): "
            "each engine worker holds one GPU",
            param="tensor_parallel_size",
        )
    if not spec.gpus and pp > 1:
        raise InvalidInput(
            "pipeline_parallel_size needs GPUs (vLLM's CPU backend fails with it)",
            param=("pipeline_parallel_size"),
        )
    if spec.quantization is not None and not spec.gpus:
        raise InvalidInput("quantization fp8 needs GPUs", param="quantization")


def _vllm_args(spec: ModelServerSpec) -> list[str]:
    args = ["--model", spec.model, "--served-model-name", spec.served_model_name, "--port", str(PORT)]
    if spec.max_model_len is not None:
        args += ["--max-model-len", str(spec.max_model_len)]
    if spec.dtype is not None:
        args += ["--dtype", spec.dtype]
    if spec.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(spec.gpu_memory_utilization)]
    tp, pp = parallel_sizes(spec)
    if tp > 1:
        args += ["--tensor-parallel-size", str(tp)]
    if pp > 1:
        args += ["--pipeline-parallel-size", str(pp)]
    if spec.quantization is not None:
        args += ["--quantization", spec.quantization]
    if spec.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", spec.kv_cache_dtype]
    if spec.enable_lora:
        args += ["--enable-lora"]
        if spec.max_lora_rank is not None:
            args += ["--max-lora-rank", str(spec.max_lora_rank)]
        if spec.lora_modules:
            args += ["--lora-modules", *(f"{name}={path}" for name, path in spec.lora_modules)]
    return args + list(spec.extra_args)


def _resources(spec: ModelServerSpec) -> client.V1ResourceRequirements:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.cpu_request:
        requests["cpu"] = spec.cpu_request
    if spec.cpu_limit:
        limits["cpu"] = spec.cpu_limit
    if spec.memory_request:
        requests["memory"] = spec.memory_request
    if spec.memory_limit:
        limits["memory"] = spec.memory_limit
    if spec.gpus:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(spec.gpus)
    return client.V1ResourceRequirements(requests=requests or None, limits=limits or None)


def _probe(*, initial_delay_s: int, period_s: int, failures: int) -> client.V1Probe:
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/health", port=PORT),
        initial_delay_seconds=initial_delay_s,
        period_seconds=period_s,
        timeout_seconds=5,
        failure_threshold=failures,
    )


def render(spec: ModelServerSpec, *, settings: K8sSettings, namespace: str) -> ModelServerManifests:
    """Return the Deployment, Service, PVC and ScaledObject serving `spec` in `namespace`.

    Raises:
        InvalidInput: a name, quantity or bound is invalid (checked before anything is built).
    """
    validate_spec(spec, settings)
    k8s_names.validate_object_name(namespace, field="namespace")
    model = spec.deployment_model or spec.served_model_name
    name = k8s_names.object_name(model, client_id=spec.client_id)
    selector = {NAME_LABEL: name, COMPONENT_LABEL: "model-server"}
    labels = {
        **selector,
        MANAGED_BY_LABEL: MANAGED_BY,
        CLIENT_LABEL: k8s_names.label_value(spec.client_id),
        MODEL_LABEL: k8s_names.label_value(model),
    }
    annotations = {MODEL_ANNOTATION: spec.model, SERVED_NAME_ANNOTATION: spec.served_model_name}

    def meta() -> client.V1ObjectMeta:
        return client.V1ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels), annotations=dict(annotations)
        )

    base_env = {"HF_HOME": f"{CACHE_MOUNT}/huggingface", "VLLM_CACHE_ROOT": f"{CACHE_MOUNT}/vllm"}
    tp, pp = parallel_sizes(spec)
    if not spec.gpus and tp * pp > 1:
        # vLLM's automatic OpenMP binding wants a NUMA node per CPU worker; a pod rarely has that many.
        base_env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    env = [
        *(client.V1EnvVar(name=key, value=value) for key, value in base_env.items() if key not in spec.env),
        *(client.V1EnvVar(name=key, value=value) for key, value in sorted(spec.env.items())),
    ]
    container = client.V1Container(
        name="vllm",
        image=spec.image or settings.vllm_image,
        command=["vllm", "serve"],
        args=_vllm_args(spec),
        ports=[client.V1ContainerPort(name="http", container_port=PORT, protocol="TCP")],
        env=env,
        resources=_resources(spec),
        # Loading weights takes minutes: the startup probe allows it; liveness only starts after it.
        startup_probe=_probe(
            initial_delay_s=10, period_s=10, failures=max(1, int(settings.ready_timeout_s // 10))
        ),
        readiness_probe=_probe(initial_delay_s=5, period_s=10, failures=3),
        liveness_probe=_probe(initial_delay_s=0, period_s=20, failures=3),
        volume_mounts=[
            client.V1VolumeMount(name="model-cache", mount_path=CACHE_MOUNT),
            client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
    )
    deployment = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=meta(),
        spec=client.V1DeploymentSpec(
            # Start with one replica even when min is 0, so a deploy proves the model loads; KEDA owns
            # the count after that (updates never send `replicas`).
            replicas=max(1, spec.min_replicas),
            selector=client.V1LabelSelector(match_labels=dict(selector)),
            progress_deadline_seconds=max(1, int(settings.ready_timeout_s)),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=dict(labels), annotations=dict(annotations)),
                spec=client.V1PodSpec(
                    containers=[container],
                    termination_grace_period_seconds=settings.termination_grace_s,
                    volumes=[
                        client.V1Volume(
                            name="model-cache",
                            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                                claim_name=name
                            ),
                        ),
                        # vLLM's workers share tensors through /dev/shm; the default 64 MiB is too small.
                        client.V1Volume(
                            name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")
                        ),
                    ],
                ),
            ),
        ),
    )
    service = client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=meta(),
        spec=client.V1ServiceSpec(
            type="ClusterIP",
            selector=dict(selector),
            ports=[client.V1ServicePort(name="http", port=PORT, target_port="http", protocol="TCP")],
        ),
    )
    pvc = client.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=meta(),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=[spec.cache_access_mode],
            storage_class_name=spec.storage_class or settings.storage_class,
            resources=client.V1VolumeResourceRequirements(
                requests={"storage": spec.cache_size or settings.cache_size}
            ),
        ),
    )
    scaled_object = _scaled_object(spec, settings=settings, name=name, namespace=namespace)
    scaled_object["metadata"] = wire(meta())
    for obj in (deployment, service, pvc):
        assert obj.metadata is not None and obj.metadata.annotations is not None
        obj.metadata.annotations[SPEC_HASH_ANNOTATION] = spec_hash(wire(obj))
    scaled_object["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(scaled_object)
    return ModelServerManifests(name, namespace, deployment, service, pvc, scaled_object)


# The ingress's gauge of requests waiting for a model server (studio.backends.ray_metrics), as Prometheus
# names it once Ray exports it.
WAITING_METRIC = "ray_mini_studio_model_waiting_requests"


def load_query(*, namespace: str, name: str) -> str:
    """Return the PromQL sum of vLLM's running and waiting requests over this deployment's pods."""
    # Pods are `<name>-<replicaset hash>-<suffix>` (the second dash may be cut, see k8s_names); names end
    # in a hash, so no other deployment's pods match.
    match = f'namespace="{namespace}",pod=~"{name}-[a-z0-9]+-?[a-z0-9]+"'
    # `or vector(0)`: with no pod scraped (scaled to zero) the sum is 0, not an empty result. The third
    # term is what scales from zero: requests the ingress replicas hold while no pod runs (a Ray metric,
    # exported by every Ray node's metrics agent, `ray_` prefixed).
    waiting = f'{WAITING_METRIC}{{model_namespace="{namespace}",model_server="{name}"}}'
    return (
        f"(sum(vllm:num_requests_running{{{match}}}) or vector(0))"
        f" + (sum(vllm:num_requests_waiting{{{match}}}) or vector(0))"
        f" + (sum({waiting}) or vector(0))"
    )


def _scaled_object(
    spec: ModelServerSpec, *, settings: K8sSettings, name: str, namespace: str
) -> dict[str, Any]:
    return {
        "apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}",
        "kind": "ScaledObject",
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": spec.min_replicas,
            "maxReplicaCount": spec.max_replicas,
            "cooldownPeriod": settings.cooldown_s,
            "pollingInterval": settings.polling_interval_s,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "vllm-load",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": settings.prometheus_address,
                        "query": load_query(namespace=namespace, name=name),
                        "threshold": str(settings.scale_threshold),
                        # Any request at all wakes a deployment scaled to zero.
                        "activationThreshold": "0",
                    },
                }
            ],
        },
    }
