"""`cluster.yaml` and `serve_config.yaml` are valid for the tools that read them, and the cluster files
(`cluster.yaml`, `deployments/mini-studio.yaml`) are locked by default: Ray token authentication, the
dashboard on loopback or behind NetworkPolicies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_matches_the_ray_cluster_launcher_schema() -> None:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]


def test_serve_config_matches_the_serve_schema_and_imports() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "studio.app.builder:build_app"
    assert config.http_options.port == 8000
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))


# --- locked by default: token authentication, the dashboard not on the network ----------------------------
# `ray up` runs each node's start commands in a login shell. They run here in plain bash (so ~/.bashrc does
# not count: the commands must set token mode themselves), with a stub `~/venv/bin/ray` that records its
# arguments and the RAY_AUTH_MODE it got, in a clean environment (a RAY_AUTH_MODE set where the tests run
# must not make a command without one pass).
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STUB_RAY = """#!/bin/sh
printf 'RAY_AUTH_MODE=%s\\037' "${RAY_AUTH_MODE-}" >> "$CALLS"
printf '%s\\037' "$@" >> "$CALLS"
printf '\\036' >> "$CALLS"
"""


def ray_calls(commands: list[str], home: Path) -> list[tuple[str, list[str]]]:
    """Run launcher start commands with a stub `ray`; return (RAY_AUTH_MODE, arguments) for each call."""
    stub = home / "venv" / "bin" / "ray"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB_RAY)
    stub.chmod(0o755)
    calls = home / "calls"
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "CALLS": str(calls), "RAY_HEAD_IP": "10.0.0.1"}
    for command in commands:
        subprocess.run(["bash", "-c", command], env=env, capture_output=True, timeout=60, check=False)
    recorded = []
    for record in (calls.read_text() if calls.exists() else "").split("\036")[:-1]:
        mode, *args = record.split("\037")[:-1]
        recorded.append((mode.removeprefix("RAY_AUTH_MODE="), args))
    return recorded


def option(args: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def cluster_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())  # type: ignore[no-any-return]


def test_the_head_starts_ray_with_token_auth_and_the_dashboard_on_loopback(tmp_path: Path) -> None:
    calls = ray_calls(cluster_config()["head_start_ray_commands"], tmp_path)
    (head,) = [(mode, args) for mode, args in calls if args[:1] == ["start"] and "--head" in args]
    mode, args = head
    assert mode == "token"
    # Ray's own default for --dashboard-host is localhost; an explicit value must stay on loopback.
    assert option(args, "--dashboard-host", "localhost") in LOOPBACK


def test_every_worker_starts_ray_in_token_mode_and_every_node_gets_the_token(tmp_path: Path) -> None:
    config = cluster_config()
    calls = ray_calls(config["worker_start_ray_commands"], tmp_path)
    starts = [mode for mode, args in calls if args[:1] == ["start"]]
    assert starts == ["token"]
    # `ray get-auth-token --generate` writes ~/.ray/auth_token on the operator's machine; `ray up` copies it
    # to the same path on every node, where Ray looks for it by default.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_every_node_starts_ray_with_a_node_cache_on_its_own_disk(tmp_path: Path) -> None:
    """No shared file system (S3): each raylet, whose runs and replicas inherit its environment, gets
    `STUDIO_NODE_CACHE_DIR` from the start command itself, under the node's home."""
    config = cluster_config()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        home = tmp_path / key
        stub = home / "venv" / "bin" / "ray"
        stub.parent.mkdir(parents=True)
        stub.write_text(
            '#!/bin/sh\n[ "$1" = start ] && printf %s "${STUDIO_NODE_CACHE_DIR-}" > "$HOME/cache"\n'
        )
        stub.chmod(0o755)
        for command in config[key]:
            subprocess.run(
                ["bash", "-c", command], env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, check=False
            )
        assert (home / "cache").read_text() == f"{home}/mini-studio-cache", key


# --- the KubeRay RayService: token auth, and NetworkPolicies that keep 8265 and 6379 in the cluster ---------
OPERATOR_NAMESPACE = "default"  # where `helm install kuberay-operator` and KubeRay's kustomize put it


def manifest() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "deployments" / "mini-studio.yaml").read_text()))


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[op]:  # fmt: skip
            return False
    return True


def admitted(
    policies: list[dict[str, Any]], *, pod: dict[str, Any], source: dict[str, Any], port: int
) -> bool:
    """Return whether `source` may open `port` on `pod`, with Kubernetes ingress semantics: a pod that no
    policy selects admits everything; a selected pod, only what some rule of a selecting policy admits."""
    selecting = [p for p in policies
                 if p["metadata"]["namespace"] == pod["namespace"]
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], pod["labels"])]  # fmt: skip
    if not selecting:
        return True

    def peer_matches(peer: dict[str, Any], namespace: str) -> bool:
        if "ipBlock" in peer:
            return False  # the sources below are pods; none is named by address
        if source.get("namespace") is None:
            return False  # outside the cluster: only a rule without `from` admits it
        in_namespace = (
            selector_matches(peer["namespaceSelector"], source["namespace_labels"])
            if "namespaceSelector" in peer
            else source["namespace"] == namespace
        )
        return in_namespace and selector_matches(peer.get("podSelector", {}), source["labels"])

    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports") or [{}]
            port_ok = any(
                p.get("protocol", "TCP") == "TCP"
                and (p.get("port") is None or p["port"] <= port <= p.get("endPort", p["port"]))
                for p in ports
            )
            peers = rule.get("from")
            if port_ok and (
                not peers or any(peer_matches(peer, policy["metadata"]["namespace"]) for peer in peers)
            ):
                return True
    return False


def pod_in(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"namespace": namespace, "labels": labels,
            "namespace_labels": {"kubernetes.io/metadata.name": namespace}}  # fmt: skip


def test_the_rayservice_enables_token_auth_from_a_named_secret() -> None:
    (service,) = [doc for doc in manifest() if doc["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    auth = cluster["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"]
    assert tuple(int(part) for part in cluster["rayVersion"].split(".")) >= (2, 52, 0)  # token auth's first
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        env = {item["name"]: item for item in pod["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": auth["secretName"],
            "key": "auth_token",
        }


def test_the_rayservice_runs_the_entry_point_serve_config_ships() -> None:
    """KubeRay starts Serve's controller itself, so serve_config.yaml's `controller_options` env (HAProxy on
    the entry port) must reach the head pod's environment, value for value."""
    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["controller_options"]["runtime_env"]
    (service,) = [doc for doc in manifest() if doc["kind"] == "RayService"]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in head["env"]}
    assert shipped["env_vars"] and all(env.get(k) == v for k, v in shipped["env_vars"].items()), env


def test_network_policies_keep_the_dashboard_and_gcs_to_ray_pods_and_the_operator() -> None:
    docs = manifest()
    (service,) = [doc for doc in docs if doc["kind"] == "RayService"]
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    namespace = service["metadata"]["namespace"]
    cluster = service["spec"]["rayClusterConfig"]
    # The labels KubeRay gives the pods: the template's, plus the node type and the generated cluster name.
    kuberay = {
        "ray.io/cluster": "mini-studio-x7k2p",
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
    }
    head_labels = cluster["headGroupSpec"]["template"].get("metadata", {}).get("labels", {})
    head = pod_in(namespace, head_labels | kuberay | {"ray.io/node-type": "head"})
    groups = cluster["workerGroupSpecs"]  # CPU and GPU workers, labelled alike
    (labels,) = {tuple(g["template"].get("metadata", {}).get("labels", {}).items()) for g in groups}
    worker_labels = dict(labels)
    worker = pod_in(namespace, worker_labels | kuberay | {"ray.io/node-type": "worker"})
    operator = pod_in(OPERATOR_NAMESPACE, {"app.kubernetes.io/name": "kuberay-operator",
                                           "app.kubernetes.io/component": "kuberay-operator"})  # fmt: skip
    neighbour = pod_in(namespace, {"app": "something-else"})
    elsewhere = pod_in("team-b", {"app.kubernetes.io/component": "kuberay-operator"})  # a look-alike
    operator_neighbour = pod_in(OPERATOR_NAMESPACE, {"app": "web"})
    model_server = pod_in("mini-studio-models", {"app.kubernetes.io/managed-by": "mini-studio"})
    internet: dict[str, Any] = {"namespace": None, "labels": {}}

    for port in (8265, 6379):
        for allowed in (worker, operator):
            assert admitted(policies, pod=head, source=allowed, port=port), (port, allowed)
        for refused in (neighbour, elsewhere, operator_neighbour, model_server, internet):
            assert not admitted(policies, pod=head, source=refused, port=port), (port, refused)
    for client in (internet, neighbour, model_server):
        assert admitted(policies, pod=head, source=client, port=8000)
    # The workers' Ray ports (raylet, object manager, agent) are for Ray's own pods only.
    assert admitted(policies, pod=worker, source=head, port=52365)
    assert not admitted(policies, pod=worker, source=neighbour, port=52365)
