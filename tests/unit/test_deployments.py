"""`deployments/mini-studio.yaml`: core objects (NetworkPolicies too) schema-valid, the Role exactly what the
backend uses. What the NetworkPolicies admit is checked in test_cluster_config.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.k8s_fake.schemas import validate_manifest

ROOT = Path(__file__).resolve().parents[2]
BACKEND_VERBS = {"get", "create", "patch", "delete"}  # the verbs studio/backends/kubernetes.py calls


def documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "deployments" / "mini-studio.yaml").read_text()))


def test_core_objects_match_the_official_schemas_strictly() -> None:
    core = [doc for doc in documents() if doc["kind"] != "RayService"]
    assert {doc["kind"] for doc in core} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "NetworkPolicy"
    }  # fmt: skip
    for doc in core:
        validate_manifest(doc)


def test_the_role_grants_only_the_backends_verbs_on_its_four_resources() -> None:
    (role,) = [doc for doc in documents() if doc["kind"] == "Role"]
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}  # fmt: skip
    assert granted == {
        ("apps", "deployments"): BACKEND_VERBS,
        ("", "services"): BACKEND_VERBS,
        ("", "persistentvolumeclaims"): BACKEND_VERBS,
        ("keda.sh", "scaledobjects"): BACKEND_VERBS,
    }
    (binding,) = [doc for doc in documents() if doc["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "mini-studio-models"


def test_the_rayservice_runs_serve_config_with_settings_for_kubernetes() -> None:
    from ray.serve.schema import ServeDeploySchema

    from studio.config import load_settings

    (service,) = [doc for doc in documents() if doc["kind"] == "RayService"]
    serve = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    local = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    assert serve.applications[0].import_path == local.applications[0].import_path
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}  # the ingress replicas and CPU work; GPU work
    worker = groups["gpu"]
    for pod in (head, *(group["template"]["spec"] for group in groups.values())):
        assert pod["serviceAccountName"] == "mini-studio"
        env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
        settings = load_settings(**{"k8s": {"in_cluster": env["STUDIO_K8S__IN_CLUSTER"] == "true",
                                            "namespace": env["STUDIO_K8S__NAMESPACE"]}})  # fmt: skip
        assert settings.k8s.in_cluster and settings.k8s.namespace == "mini-studio-models"
    assert (
        worker["minReplicas"] == 0
        and worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )
