"""Model deployments: their state machine, where a model is placed, and the names of Serve applications.

A deployment puts one model name (a base model or an `ft:` fine-tune) behind the inference API. Its
record in `model_routing` is both the `/v1/deployments` resource and the routing entry the ingress keeps
in memory. Every status change goes through `check_deployment_transition`; the store writes it as a
conditional update on the old status.

Placement (`placement`): a base model or a full fine-tune runs its own model server (a Serve application
or a Kubernetes Deployment); a LoRA fine-tune on Serve is an *adapter* of its base's deployment, loaded
into its replicas at runtime, so it answers within seconds without new replicas. On Kubernetes a LoRA
fine-tune gets its own server: the base model with the adapter loaded at start.

Shared bases: a base model's deployment is one server for every client allowed that base, owned by
nobody. It records its *holders* (the clients that asked for it, and `ADMIN_HOLDER` when an admin did);
it runs while one holds it, and is undeployed when the last lets go (or an admin undeploys it).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from studio.config import MODEL_APP_PREFIX
from studio.errors import Conflict

DeploymentStatus = Literal["deploying", "ready", "failed", "deleting"]
Target = Literal["serve", "kubernetes"]
Placement = Literal["server", "adapter"]

# The holder an admin's deploy records on a shared base (client ids never take this form).
ADMIN_HOLDER = "admin"

# Statuses in which the route exists for inference (a deploying one makes requests wait, bounded).
LIVE: frozenset[str] = frozenset({"deploying", "ready"})

# FROM -> allowed TO. `ready -> deploying`: a model server lost its replicas and is coming back;
# `failed -> deploying`: a redeploy of the same model; `deleting -> failed`: a removal that did not
# complete within its deadline (shown with the reason; a new DELETE tries again). A deleted deployment's
# record is removed.
DEPLOYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    "deploying": frozenset({"ready", "failed", "deleting"}),
    "ready": frozenset({"deploying", "failed", "deleting"}),
    "failed": frozenset({"deploying", "deleting"}),
    "deleting": frozenset({"failed"}),
}

# Serve applications Mini Studio adds for models all start with this prefix, which the ingress
# application's name may not use: `serve.run` under an existing name silently replaces that application.
APP_PREFIX = MODEL_APP_PREFIX
_SLUG = re.compile(r"[^a-z0-9]+")


def check_deployment_transition(current: str, target: str) -> None:
    """Raise Conflict unless the table allows `current -> target`."""
    if target not in DEPLOYMENT_TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"a deployment cannot go from {current!r} to {target!r}", code="invalid_status_change")


def serve_app_name(model: str) -> str:
    """Return the Serve application name of `model`'s model server: prefix, readable slug, short hash.

    The hash keeps two names that slug alike (`a/b` and `a-b`) apart; the result is at most 60 chars.
    """
    slug = _SLUG.sub("-", model.lower()).strip("-")[:36].strip("-") or "model"
    digest = hashlib.sha256(model.encode()).hexdigest()[:10]
    return f"{APP_PREFIX}{slug}-{digest}"


def is_reserved_app_name(name: str) -> bool:
    """Return True when `name` is in the namespace of model applications (not usable by the ingress)."""
    return name.startswith(APP_PREFIX)


def placement(*, fine_tuning_method: Literal["lora", "full"] | None, target: Target) -> Placement:
    """Return how a model is deployed: LoRA fine-tunes on Serve are adapters of their base's server;
    everything else (on Kubernetes, a LoRA fine-tune too: its base with the adapter) gets its own."""
    return "adapter" if fine_tuning_method == "lora" and target == "serve" else "server"
