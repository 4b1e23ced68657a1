"""Offline schema validation of manifests, strict (unknown fields are errors), shared by tests and the fake.

Core objects (Deployment, Service, PersistentVolumeClaim, Namespace) are checked with `kubernetes-validate`
against the Kubernetes 1.37 OpenAPI schemas in strict mode. The KEDA ScaledObject is checked with
`jsonschema` against `SCALED_OBJECT_SCHEMA`: the `openAPIV3Schema` of KEDA's CRD
(`config/crd/bases/keda.sh_scaledobjects.yaml`, keda.sh/v1alpha1), written out without descriptions and with
`additionalProperties: false` added wherever the CRD lists properties (the API server prunes unknown fields
of structural CRDs silently; strict mode turns them into errors so a typo cannot pass).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]

KUBERNETES_VERSION = "1.37"


class SchemaError(ValueError):
    """A manifest does not match its schema; the message names the field path."""


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_STR = {"type": "string"}
_POLICY = _obj({"periodSeconds": _INT32, "type": _STR, "value": _INT32}, ["periodSeconds", "type", "value"])
_RULES = _obj(
    {
        "policies": {"type": "array", "items": _POLICY},
        "selectPolicy": _STR,
        "stabilizationWindowSeconds": _INT32,
        "tolerance": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    }
)
SCALED_OBJECT_SCHEMA: dict[str, Any] = _obj(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object"},
        "spec": _obj(
            {
                "advanced": _obj(
                    {
                        "horizontalPodAutoscalerConfig": _obj(
                            {"behavior": _obj({"scaleDown": _RULES, "scaleUp": _RULES}), "name": _STR}
                        ),
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": _obj(
                            {"activationTarget": _STR, "formula": _STR, "metricType": _STR, "target": _STR}
                        ),
                    }
                ),
                "cooldownPeriod": _INT32,
                "initialCooldownPeriod": _INT32,
                "fallback": _obj(
                    {"behavior": _STR, "failureThreshold": _INT32, "replicas": _INT32},
                    ["failureThreshold", "replicas"],
                ),
                "idleReplicaCount": _INT32,
                "maxReplicaCount": _INT32,
                "minReplicaCount": _INT32,
                "pollingInterval": _INT32,
                "scaleTargetRef": _obj(
                    {"apiVersion": _STR, "envSourceContainerName": _STR, "kind": _STR, "name": _STR}, ["name"]
                ),
                "triggers": {
                    "type": "array",
                    "items": _obj(
                        {
                            "authenticationRef": _obj({"kind": _STR, "name": _STR}, ["name"]),
                            "metadata": {"type": "object", "additionalProperties": _STR},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "name": _STR,
                            "type": _STR,
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        ["metadata", "type"],
                    ),
                },
            },
            ["scaleTargetRef", "triggers"],
        ),
        "status": {"type": "object"},
    },
    ["spec"],
)


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Check `manifest` (wire JSON) against its official schema, strictly.

    Raises:
        SchemaError: naming the path of the first field at fault.
    """
    if manifest.get("kind") == "ScaledObject":
        try:
            jsonschema.validate(manifest, SCALED_OBJECT_SCHEMA, cls=jsonschema.Draft202012Validator)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(part) for part in exc.absolute_path)
            raise SchemaError(f"{path or '<root>'}: {exc.message}") from None
        return
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        raise SchemaError(f"{path or '<root>'}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise SchemaError(exc.message) from None
