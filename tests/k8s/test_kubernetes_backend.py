"""KubernetesBackend driven through the official client against the fake API server (tests/k8s_fake)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from studio.backends import k8s_manifests as m
from studio.backends.kubernetes import KubernetesBackend, load_configuration
from studio.config import K8sSettings
from studio.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from tests.k8s.conftest import NAMESPACE, api_client
from tests.k8s_fake import FakeKubernetes, validate_manifest

PLURALS = ("deployments", "services", "persistentvolumeclaims", "scaledobjects")


def base_spec(**overrides: object) -> m.ModelServerSpec:
    fields: dict[str, object] = {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "served_model_name": "qwen2.5-0.5b",
        "client_id": "client-acme",
        "cpu_request": "2",
        "memory_request": "8Gi",
        "memory_limit": "12Gi",
    }
    return m.ModelServerSpec(**(fields | overrides))  # type: ignore[arg-type]


def lora_spec() -> m.ModelServerSpec:
    return base_spec(
        served_model_name="ft:qwen2.5-0.5b:acme:demo", enable_lora=True, max_lora_rank=16, gpus=1
    )


def body_of(exc: ApiException) -> Any:
    return json.loads(exc.body or "{}")


def versions(fake: FakeKubernetes, name: str) -> dict[str, tuple[str, int]]:
    out = {}
    for plural in PLURALS:
        obj = fake.cluster.stored(plural, NAMESPACE, name)
        assert obj is not None, plural
        out[plural] = (obj["metadata"]["resourceVersion"], obj["metadata"]["generation"])
    return out


async def wait_state(backend: KubernetesBackend, name: str, want: str, timeout_s: float = 5.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        state, message = await backend.status(name, namespace=NAMESPACE)
        if state == want:
            return message
        assert asyncio.get_running_loop().time() < deadline, (state, message)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("spec", [base_spec(), lora_spec()], ids=["base", "lora"])
async def test_apply_creates_four_schema_valid_managed_objects(
    backend: KubernetesBackend, fake: FakeKubernetes, spec: m.ModelServerSpec
) -> None:
    placed = await backend.apply(spec)

    assert placed.namespace == NAMESPACE
    assert placed.service_url == f"http://{placed.name}.{NAMESPACE}.svc.cluster.local:8000"
    for plural in PLURALS:
        obj = fake.cluster.stored(plural, NAMESPACE, placed.name)
        assert obj is not None, plural
        validate_manifest(obj)  # as stored, with server defaults and status
        assert obj["metadata"]["labels"][m.MANAGED_BY_LABEL] == "mini-studio"
        assert obj["metadata"]["annotations"][m.MODEL_ANNOTATION] == spec.model
    deployment = fake.cluster.stored("deployments", NAMESPACE, placed.name)
    assert deployment is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--enable-lora" in args) is spec.enable_lora


async def test_status_turns_ready_when_the_controller_marks_the_deployment(
    backend: KubernetesBackend,
) -> None:
    placed = await backend.apply(base_spec())
    state, message = await backend.status(placed.name, namespace=NAMESPACE)
    assert state == "deploying", message

    assert await wait_state(backend, placed.name, "ready") == "1/1 replicas ready"


async def test_second_identical_apply_changes_nothing(
    backend: KubernetesBackend, fake: FakeKubernetes
) -> None:
    placed = await backend.apply(lora_spec())
    await wait_state(backend, placed.name, "ready")  # the controller's status writes are done
    before = versions(fake, placed.name)
    writes_before = [r for r in fake.cluster.requests if r[0] != "GET"]

    again = await backend.apply(lora_spec())

    assert again == placed
    assert versions(fake, placed.name) == before
    assert [r for r in fake.cluster.requests if r[0] != "GET"] == writes_before  # not one write sent


async def test_changed_spec_patches_and_bumps_generation_but_keeps_replicas(
    backend: KubernetesBackend, fake: FakeKubernetes
) -> None:
    placed = await backend.apply(base_spec())
    deployment = fake.cluster.stored("deployments", NAMESPACE, placed.name)
    assert deployment is not None
    # KEDA scaled it to 3 meanwhile: a redeploy must not reset that.
    with api_client(fake) as api:
        client.AppsV1Api(api).patch_namespaced_deployment(
            placed.name, NAMESPACE, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
        )

    await backend.apply(base_spec(max_model_len=4096, max_replicas=4))

    after = fake.cluster.stored("deployments", NAMESPACE, placed.name)
    assert after is not None
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"] + 2
    assert after["spec"]["replicas"] == 3
    assert "--max-model-len" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    scaled = fake.cluster.stored("scaledobjects", NAMESPACE, placed.name)
    assert scaled is not None and scaled["spec"]["maxReplicaCount"] == 4


async def test_foreign_object_of_the_same_name_is_refused_and_untouched(
    backend: KubernetesBackend, fake: FakeKubernetes, settings: K8sSettings
) -> None:
    name = m.render(base_spec(), settings=settings, namespace=NAMESPACE).name
    foreign = client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/managed-by": "helm"}),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)], selector={"app": "other"}),
    )
    with api_client(fake) as api:
        client.CoreV1Api(api).create_namespaced_service(NAMESPACE, foreign)
    before = fake.cluster.stored("services", NAMESPACE, name)

    with pytest.raises(Conflict, match="not managed by Mini Studio"):
        await backend.apply(base_spec())

    assert fake.cluster.stored("services", NAMESPACE, name) == before
    for plural in ("deployments", "persistentvolumeclaims", "scaledobjects"):
        assert fake.cluster.stored(plural, NAMESPACE, name) is None  # refused before any write
    await backend.delete(name, namespace=NAMESPACE)
    assert fake.cluster.stored("services", NAMESPACE, name) == before  # delete leaves it alone too


@pytest.mark.parametrize(("verb", "plural"), [("create", "deployments"), ("get", "scaledobjects")])
async def test_forbidden_names_the_verb_and_resource(
    backend: KubernetesBackend, fake: FakeKubernetes, verb: str, plural: str
) -> None:
    fake.cluster.deny(verb, plural)

    with pytest.raises(Forbidden) as caught:
        await backend.apply(base_spec())

    assert f"'{verb}'" in caught.value.message
    assert plural in caught.value.message
    assert caught.value.code == "kubernetes_forbidden"


async def test_delete_leaves_no_managed_object(backend: KubernetesBackend, fake: FakeKubernetes) -> None:
    placed = await backend.apply(base_spec())
    other = await backend.apply(lora_spec())

    deleted = await backend.delete(placed.name, namespace=NAMESPACE)

    assert sorted(deleted) == ["Deployment", "PersistentVolumeClaim", "ScaledObject", "Service"]
    for plural in PLURALS:
        assert fake.cluster.stored(plural, NAMESPACE, placed.name) is None
        assert fake.cluster.stored(plural, NAMESPACE, other.name) is not None
    assert await backend.delete(placed.name, namespace=NAMESPACE) == []  # already gone: fine
    with pytest.raises(NotFound):
        await backend.status(placed.name, namespace=NAMESPACE)
    await backend.delete(other.name, namespace=NAMESPACE)
    with api_client(fake) as api:
        for items in (
            client.AppsV1Api(api)
            .list_namespaced_deployment(NAMESPACE, label_selector="app.kubernetes.io/managed-by=mini-studio")
            .items,
            client.CoreV1Api(api)
            .list_namespaced_service(NAMESPACE, label_selector="app.kubernetes.io/managed-by=mini-studio")
            .items,
        ):
            assert items == []


async def test_failing_deployment_reports_failed_with_the_reason(
    backend: KubernetesBackend, fake: FakeKubernetes, settings: K8sSettings
) -> None:
    name = m.render(base_spec(), settings=settings, namespace=NAMESPACE).name
    fake.cluster.fail_deployment(name)
    await backend.apply(base_spec())

    message = await wait_state(backend, name, "failed")

    assert message.startswith("ProgressDeadlineExceeded")


async def test_missing_namespace_is_a_conflict_naming_the_setting(fake: FakeKubernetes) -> None:
    configuration = client.Configuration(host=fake.url)
    k8s = KubernetesBackend(K8sSettings(namespace="absent", timeout_s=5), configuration=configuration)

    with pytest.raises(Conflict, match="STUDIO_K8S__NAMESPACE") as caught:
        await k8s.apply(base_spec())

    assert caught.value.code == "namespace_missing"
    await k8s.close()


async def test_namespace_per_client_is_created_on_first_apply(fake: FakeKubernetes) -> None:
    configuration = client.Configuration(host=fake.url)
    settings = K8sSettings(namespace="studio", namespace_per_client=True, timeout_s=5)
    k8s = KubernetesBackend(settings, configuration=configuration)

    placed = await k8s.apply(base_spec(client_id="client-Beta_1"))

    assert placed.namespace == "studio-client-beta-1"
    namespace = fake.cluster.stored("namespaces", "", placed.namespace)
    assert namespace is not None and namespace["metadata"]["labels"][m.MANAGED_BY_LABEL] == "mini-studio"
    assert fake.cluster.stored("deployments", placed.namespace, placed.name) is not None
    await k8s.close()


async def test_invalid_quantity_is_refused_before_any_api_call(
    backend: KubernetesBackend, fake: FakeKubernetes
) -> None:
    calls = len(fake.cluster.requests)

    with pytest.raises(InvalidInput) as caught:
        await backend.apply(base_spec(memory_limit="lots"))

    assert caught.value.param == "memory_limit"
    assert len(fake.cluster.requests) == calls


async def test_unreachable_api_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    k8s = KubernetesBackend(K8sSettings(timeout_s=2), configuration=configuration)

    with pytest.raises(Unavailable, match=str(port)):
        await k8s.status("anything")
    await k8s.close()


async def test_no_cluster_configured_is_a_conflict_naming_the_setting(tmp_path: Path) -> None:
    settings = K8sSettings(kubeconfig=tmp_path / "no-such-kubeconfig")
    with pytest.raises(Conflict, match="STUDIO_K8S__KUBECONFIG"):
        load_configuration(settings)


async def test_fake_answers_kubernetes_status_errors(fake: FakeKubernetes) -> None:
    """The fake's own contract, through the official client: 404, 409 AlreadyExists, 409 Conflict, 422."""
    with api_client(fake) as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as missing:
            core.read_namespaced_service("nope", NAMESPACE)
        assert missing.value.status == 404 and body_of(missing.value)["reason"] == "NotFound"

        service = client.V1Service(
            metadata=client.V1ObjectMeta(name="svc"),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]),
        )
        created = core.create_namespaced_service(NAMESPACE, service)
        assert created.metadata is not None and created.spec is not None
        assert created.metadata.uid and created.spec.cluster_ip and created.metadata.generation == 1
        with pytest.raises(ApiException) as exists:
            core.create_namespaced_service(NAMESPACE, service)
        assert exists.value.status == 409 and body_of(exists.value)["reason"] == "AlreadyExists"

        stale = created.model_copy(deep=True)
        assert stale.metadata is not None
        stale.metadata.resource_version = "1"
        with pytest.raises(ApiException) as conflict:
            core.replace_namespaced_service("svc", NAMESPACE, stale)
        assert conflict.value.status == 409 and body_of(conflict.value)["reason"] == "Conflict"

        with pytest.raises(ApiException) as invalid:
            core.patch_namespaced_service(
                "svc",
                NAMESPACE,
                {"spec": {"ports": [{"port": "eighty"}]}},
                _content_type="application/merge-patch+json",
            )
        assert invalid.value.status == 422 and body_of(invalid.value)["reason"] == "Invalid"

        with pytest.raises(ApiException) as no_namespace:
            core.create_namespaced_service("ghost", service)
        assert no_namespace.value.status == 404
        assert body_of(no_namespace.value)["details"]["kind"] == "namespaces"


async def test_slow_api_times_out_as_unavailable(fake: FakeKubernetes) -> None:
    fake.cluster.latency_s = 2.0
    configuration = client.Configuration(host=fake.url)
    k8s = KubernetesBackend(K8sSettings(namespace=NAMESPACE, timeout_s=0.3), configuration=configuration)

    with pytest.raises(Unavailable, match=r"did not answer get deployments\.apps within 0\.3 s"):
        await k8s.status("anything", namespace=NAMESPACE)
    fake.cluster.latency_s = 0.0
    await k8s.close()


async def test_cluster_without_keda_is_a_conflict_saying_so(
    backend: KubernetesBackend, fake: FakeKubernetes
) -> None:
    fake.cluster.uninstall("scaledobjects")

    with pytest.raises(Conflict, match=r"scaledobjects\.keda\.sh.*install KEDA"):
        await backend.apply(base_spec())


async def test_kubeconfig_and_context_from_settings_reach_the_cluster(
    fake: FakeKubernetes, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": fake.url}},
                    {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:1"}},
                ],
                "users": [{"name": "studio", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": "serving", "context": {"cluster": "fake", "user": "studio"}},
                    {"name": "other", "context": {"cluster": "elsewhere", "user": "studio"}},
                ],
                "current-context": "other",
            }
        )
    )
    settings = K8sSettings(namespace=NAMESPACE, kubeconfig=kubeconfig, context="serving", timeout_s=5)

    k8s = KubernetesBackend(settings)  # configuration loaded from the settings

    placed = await k8s.apply(base_spec())
    assert fake.cluster.stored("deployments", NAMESPACE, placed.name) is not None
    await k8s.close()


async def test_update_racing_another_writer_rereads_and_retries(
    backend: KubernetesBackend, fake: FakeKubernetes
) -> None:
    placed = await backend.apply(base_spec())
    fake.cluster.interfere.add("deployments")
    patches_before = sum(1 for method, path in fake.cluster.requests if method == "PATCH")

    await backend.apply(base_spec(max_model_len=2048))

    deployment = fake.cluster.stored("deployments", NAMESPACE, placed.name)
    assert deployment is not None
    assert "--max-model-len" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "other-writer/touched" in deployment["metadata"]["annotations"]  # the other write is kept
    deployment_patches = [p for meth, p in fake.cluster.requests if meth == "PATCH" and "deployments" in p]
    assert len(deployment_patches) == 2  # the first met a 409 Conflict, the second went through
    assert (
        sum(1 for method, _ in fake.cluster.requests if method == "PATCH") == patches_before + 2
    )  # only it changed
