"""Kubernetes names, quantities and the four rendered manifests, validated offline against the schemas."""

from __future__ import annotations

import re
from typing import Any

import pytest

from studio.backends import k8s_manifests as m
from studio.backends.k8s_servers import KubernetesModelServers
from studio.backends.kubernetes import deployment_state
from studio.backends.serve_models import ServeModelServers
from studio.config import K8sSettings, load_settings
from studio.domain import k8s_names
from studio.domain.deployments import Target
from studio.errors import InvalidInput
from studio.schemas.deployments import Deployment, EngineOptions
from studio.serving.engine import engine_args
from tests.k8s_fake import SchemaError, validate_manifest

SETTINGS = K8sSettings(
    prometheus_address="http://prometheus.monitoring:9090", cooldown_s=120, polling_interval_s=10
)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def spec(**overrides: Any) -> m.ModelServerSpec:
    fields: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "served_model_name": "llama-3.1-8b",
        "client_id": "client-acme",
        "gpus": 1,
        "cpu_request": "4",
        "cpu_limit": "8",
        "memory_request": "24Gi",
        "memory_limit": "32Gi",
    }
    return m.ModelServerSpec(**(fields | overrides))


def rendered(**overrides: Any) -> m.ModelServerManifests:
    return m.render(spec(**overrides), settings=SETTINGS, namespace="mini-studio")


def container(manifests: m.ModelServerManifests) -> dict[str, Any]:
    wire = m.wire(manifests.deployment)
    return wire["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


# --- names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        "meta-llama/Llama-3.1-8B-Instruct",
        "ft:Qwen2.5:acme:x" * 10,
        "/models/My Model_v2",
        "ÜBER-model",
        "---",
        "9b",
    ],
)
def test_object_names_are_dns_1035_and_short(model: str) -> None:
    name = k8s_names.object_name(model, client_id="c1")
    assert DNS_1035.match(name) and len(name) <= k8s_names.MAX_MADE_NAME


def test_distinct_models_and_clients_never_share_a_name() -> None:
    # These sanitise to the same readable text; the hash keeps them apart.
    names = {
        k8s_names.object_name("org/Model.A", client_id="c1"),
        k8s_names.object_name("org/model-a", client_id="c1"),
        k8s_names.object_name("org/model-a", client_id="c2"),
        k8s_names.object_name("other/model-a", client_id="c1"),
    }
    assert len(names) == 4
    assert k8s_names.object_name("org/model-a", client_id="c1") == k8s_names.object_name(
        "org/model-a", client_id="c1"
    )


@pytest.mark.parametrize("value", ["ft:llama:acme:demo", "a" * 80, "-x-", "ok.value_1", "x/y"])
def test_label_values_are_valid(value: str) -> None:
    label = k8s_names.label_value(value)
    assert len(label) <= 63
    assert re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", label)
    if value == "ok.value_1":
        assert label == value  # valid values are kept as they are


def test_namespace_per_client_is_valid_and_bounded() -> None:
    assert k8s_names.namespace_name("studio", "client-Beta_1") == "studio-client-beta-1"
    long = k8s_names.namespace_name("studio", "x" * 100)
    assert len(long) <= 63 and DNS_1035.match(long)


@pytest.mark.parametrize("bad", ["Upper", "1abc", "a_b", "a" * 64, "", "end-"])
def test_invalid_object_names_raise_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        k8s_names.validate_object_name(bad, field="storage_class")
    assert caught.value.param == "storage_class"


# --- quantities -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "amount"),
    [("500m", "0.5"), ("2", "2"), ("16Gi", str(16 * 2**30)), ("1e3", "1000"), ("1.5G", "1500000000")],
)
def test_quantities_parse(text: str, amount: str) -> None:
    assert k8s_names.parse_quantity(text, field="x") == float(amount)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cpu_request": "two"}, "cpu_request"),
        ({"cpu_limit": "-1"}, "cpu_limit"),
        ({"cpu_request": "0"}, "cpu_request"),
        ({"memory_limit": "16GB"}, "memory_limit"),
        ({"memory_request": "16m"}, "memory_request"),
        ({"memory_request": " 1Gi"}, "memory_request"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": 1.5}, "gpus"),
        ({"cache_size": "big"}, "cache_size"),
        ({"cpu_request": "9", "cpu_limit": "8"}, "cpu_request"),
        ({"storage_class": "Fast_SSD"}, "storage_class"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
        ({"max_lora_rank": 16}, "max_lora_rank"),
        ({"served_model_name": "has space"}, "served_model_name"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"gpus": 2, "tensor_parallel_size": 4}, "tensor_parallel_size"),
        ({"gpus": 4, "tensor_parallel_size": 2, "pipeline_parallel_size": 1}, "tensor_parallel_size"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"gpus": 0, "pipeline_parallel_size": 2}, "pipeline_parallel_size"),
        ({"gpus": 0, "quantization": "fp8"}, "quantization"),
    ],
)
def test_invalid_input_is_refused_before_rendering_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        rendered(**overrides)
    assert caught.value.param == field


def test_invalid_namespace_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        m.render(spec(), settings=SETTINGS, namespace="Bad_NS")
    assert caught.value.param == "namespace"


# --- manifests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides", [{}, {"enable_lora": True, "max_lora_rank": 64}, {"gpus": 0, "cpu_limit": None}]
)
def test_every_object_is_schema_valid_in_strict_mode(overrides: dict[str, Any]) -> None:
    manifests = rendered(**overrides)
    for obj in (manifests.deployment, manifests.service, manifests.pvc, manifests.scaled_object):
        validate_manifest(m.wire(obj))


def test_strict_validation_catches_unknown_fields() -> None:
    manifests = rendered()
    deployment = m.wire(manifests.deployment)
    deployment["spec"]["replica"] = 2
    with pytest.raises(SchemaError, match="replica"):
        validate_manifest(deployment)
    scaled = m.wire(manifests.scaled_object)
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(SchemaError, match="minReplicas"):
        validate_manifest(scaled)
    scaled = m.wire(manifests.scaled_object)
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 8  # trigger metadata values are strings
    with pytest.raises(SchemaError):
        validate_manifest(scaled)


def test_deployment_runs_vllm_with_probes_cache_and_grace() -> None:
    manifests = rendered(
        max_model_len=8192, dtype="bfloat16", gpu_memory_utilization=0.9, extra_args=("--seed", "1")
    )
    deployment = m.wire(manifests.deployment)
    c = container(manifests)
    assert c["image"] == SETTINGS.vllm_image
    assert c["args"][:6] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama-3.1-8b",
        "--port",
        "8000",
    ]
    for flag in ("--max-model-len", "--dtype", "--gpu-memory-utilization", "--seed"):
        assert flag in c["args"]
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": 8000}
    assert {"name": "HF_HOME", "value": "/models/huggingface"} in c["env"]
    assert {"name": "model-cache", "mountPath": "/models"} in c["volumeMounts"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == SETTINGS.termination_grace_s
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": manifests.name}} in pod["volumes"]


def test_lora_flags_only_for_fine_tunes() -> None:
    assert "--enable-lora" not in container(rendered())["args"]
    args = container(rendered(enable_lora=True, max_lora_rank=32))["args"]
    assert args[args.index("--enable-lora") + 1 :][:2] == ["--max-lora-rank", "32"]


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _record(*, target: Target, num_gpus: float, tp: int, pp: int) -> Deployment:
    """A deployment as the service stores it once planned (sizes resolved)."""
    return Deployment(
        id="dep-1", model="meta-llama/Llama-3.1-8B", kind="base", base_model="meta-llama/Llama-3.1-8B",
        placement="server", target=target, status="deploying", app_name="llama-8b", min_replicas=1,
        max_replicas=1, target_ongoing_requests=8, num_cpus=4, num_gpus=num_gpus,
        engine=EngineOptions(tensor_parallel_size=tp, pipeline_parallel_size=pp), client_id="client-acme",
        model_source="meta-llama/Llama-3.1-8B", created_at=1, updated_at=1,
    )  # fmt: skip


@pytest.mark.parametrize(("num_gpus", "tp", "pp"), [(2, 2, 1), (4, 2, 2), (1, 1, 1)])
async def test_both_targets_run_the_same_engine_split_for_the_same_request(
    num_gpus: int, tp: int, pp: int
) -> None:
    kubernetes = KubernetesModelServers(SETTINGS)
    try:
        server = kubernetes.spec(_record(target="kubernetes", num_gpus=num_gpus, tp=tp, pp=pp))
    finally:
        await kubernetes.close()
    manifests = m.render(server, settings=SETTINGS, namespace="mini-studio")
    for obj in (manifests.deployment, manifests.service, manifests.pvc, manifests.scaled_object):
        validate_manifest(m.wire(obj))
    c = container(manifests)
    # One pod holds every worker's GPU; vLLM splits the engine over them (its multiprocessing executor).
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(num_gpus)
    assert _flag(c["args"], "--tensor-parallel-size") == (str(tp) if tp > 1 else None)
    assert _flag(c["args"], "--pipeline-parallel-size") == (str(pp) if pp > 1 else None)
    serve = ServeModelServers(scratch_dir="/tmp/s", models_dir=None, timeout_s=5)
    args = engine_args(serve.spec(_record(target="serve", num_gpus=num_gpus, tp=tp, pp=pp)))
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (tp, pp)


def test_parallel_flags_defaults_and_cpu_workers() -> None:
    # No sizes given (records from before planning): every GPU of the pod is a tensor-parallel worker.
    assert _flag(container(rendered(gpus=4))["args"], "--tensor-parallel-size") == "4"
    assert (
        _flag(container(rendered(gpus=4, pipeline_parallel_size=2))["args"], "--tensor-parallel-size") == "2"
    )
    # CPU tensor parallel: worker processes with unbound OpenMP threads (a pod has one NUMA node).
    cpu = rendered(gpus=0, cpu_limit=None, tensor_parallel_size=2)
    validate_manifest(m.wire(cpu.deployment))
    c = container(cpu)
    assert _flag(c["args"], "--tensor-parallel-size") == "2" and "nvidia.com/gpu" not in str(c["resources"])
    assert {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"} in c["env"]
    assert "VLLM_CPU_OMP_THREADS_BIND" not in str(container(rendered(gpus=0, cpu_limit=None))["env"])
    # The caller's env wins over the defaults (one entry per name).
    own = container(rendered(env={"HF_HOME": "/elsewhere"}))["env"]
    assert [e for e in own if e["name"] == "HF_HOME"] == [{"name": "HF_HOME", "value": "/elsewhere"}]
    fp8 = container(rendered(quantization="fp8", kv_cache_dtype="fp8"))["args"]
    assert _flag(fp8, "--quantization") == "fp8" and _flag(fp8, "--kv-cache-dtype") == "fp8"


def test_service_pvc_and_labels() -> None:
    manifests = rendered(
        served_model_name="ft:llama-3.1-8b:acme:demo", cache_size="50Gi", storage_class="fast-ssd"
    )
    service, pvc = m.wire(manifests.service), m.wire(manifests.pvc)
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == m.wire(manifests.deployment)["spec"]["selector"]["matchLabels"]
    assert (
        pvc["spec"]["resources"]["requests"] == {"storage": "50Gi"}
        and pvc["spec"]["storageClassName"] == "fast-ssd"
    )
    for obj in (service, pvc, m.wire(manifests.deployment), manifests.scaled_object):
        labels, annotations = obj["metadata"]["labels"], obj["metadata"]["annotations"]
        assert labels["app.kubernetes.io/managed-by"] == "mini-studio"
        assert labels["app.kubernetes.io/name"] == manifests.name
        assert labels[m.CLIENT_LABEL] == "client-acme"
        assert labels[m.MODEL_LABEL] != "ft:llama-3.1-8b:acme:demo"  # sanitised: ':' is not allowed
        assert annotations[m.MODEL_ANNOTATION] == "meta-llama/Llama-3.1-8B-Instruct"
    default = m.wire(rendered().pvc)
    assert "storageClassName" not in default["spec"]  # None: the cluster's default class
    assert default["spec"]["resources"]["requests"] == {"storage": SETTINGS.cache_size}


def test_scaled_object_allows_zero_and_queries_vllm_load() -> None:
    manifests = rendered(min_replicas=0, max_replicas=5)
    so = manifests.scaled_object["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] == 5
    assert so["cooldownPeriod"] == 120 and so["pollingInterval"] == 10
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": manifests.name}
    trigger = so["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    query = trigger["metadata"]["query"]
    assert "vllm:num_requests_running" in query and "vllm:num_requests_waiting" in query
    assert f'pod=~"{manifests.name}-' in query and 'namespace="mini-studio"' in query
    # The deployment starts with one replica even at min 0, so a deploy proves the model loads.
    assert m.wire(manifests.deployment)["spec"]["replicas"] == 1


def test_spec_hash_is_stable_and_tracks_changes() -> None:
    first, second = rendered(), rendered()
    key = m.SPEC_HASH_ANNOTATION
    assert first.deployment.metadata.annotations[key] == second.deployment.metadata.annotations[key]  # type: ignore[union-attr,index]
    changed = rendered(max_model_len=1024)
    assert changed.deployment.metadata.annotations[key] != first.deployment.metadata.annotations[key]  # type: ignore[union-attr,index]


# --- status ---------------------------------------------------------------------------------------------
def _deployment(status: dict[str, Any], *, replicas: int = 1, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas}, "status": status}


def test_deployment_state() -> None:
    available = {"type": "Available", "status": "True"}
    assert deployment_state(_deployment({}))[0] == "deploying"
    ready = {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1, "conditions": [available]}
    assert deployment_state(_deployment(ready)) == ("ready", "1/1 replicas ready")
    assert deployment_state(_deployment(ready, generation=2))[0] == "deploying"  # not yet observed
    assert (
        deployment_state(_deployment({"observedGeneration": 1}, replicas=0))[0] == "ready"
    )  # scaled to zero
    failed = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "m"}
        ],
    }
    assert deployment_state(_deployment(failed)) == ("failed", "ProgressDeadlineExceeded: m")
    quota = {
        "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}
        ]
    }
    assert deployment_state(_deployment(quota)) == ("failed", "FailedCreate: quota")


def test_k8s_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_K8S__NAMESPACE", "serving")
    monkeypatch.setenv("STUDIO_K8S__NAMESPACE_PER_CLIENT", "true")
    monkeypatch.setenv("STUDIO_K8S__STORAGE_CLASS", "fast-ssd")
    monkeypatch.setenv("STUDIO_K8S__COOLDOWN_S", "60")
    k8s = load_settings().k8s
    assert (k8s.namespace, k8s.namespace_per_client, k8s.storage_class, k8s.cooldown_s) == (
        "serving",
        True,
        "fast-ssd",
        60,
    )
    assert k8s.cache_size == "20Gi" and k8s.in_cluster is False
