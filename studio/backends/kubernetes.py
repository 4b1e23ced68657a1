"""Serve a model on a Kubernetes cluster: apply, follow and delete its four objects (see `k8s_manifests`).

The official client is blocking: every call runs in `asyncio.to_thread` under
`asyncio.timeout(settings.timeout_s)` (and the same HTTP timeout, so the thread ends too). Errors become
domain errors: 403 -> `Forbidden` naming the verb and resource, 404 -> `NotFound`, 409 -> `Conflict`,
400/422 -> `InvalidInput`, 5xx / unreachable / timeout -> `Unavailable`.

Invariants: an object without `app.kubernetes.io/managed-by: mini-studio` is never changed or deleted; an
apply whose rendered manifest hash equals the live object's annotation sends no write at all, so a second
identical apply leaves every resourceVersion and generation as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from studio.backends import k8s_manifests as m
from studio.blocking import BlockingCalls
from studio.config import K8sSettings
from studio.domain import k8s_names
from studio.errors import Conflict, Forbidden, InvalidInput, NotFound, StudioError, Unavailable

T = TypeVar("T")
DeploymentState = Literal["deploying", "ready", "failed"]
MERGE_PATCH = "application/merge-patch+json"
UPDATE_ATTEMPTS = 3


@dataclass(frozen=True)
class K8sDeployment:
    """Where a model server lives once applied."""

    name: str
    namespace: str
    service_url: str


@dataclass(frozen=True)
class _Kind:
    plural: str
    group: str  # "" for the core group
    read: Callable[[str, str], Any]
    create: Callable[[str, dict[str, Any]], Any]
    patch: Callable[[str, str, dict[str, Any]], Any]
    delete: Callable[..., Any]  # (name, namespace, body=V1DeleteOptions)

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def load_configuration(settings: K8sSettings) -> client.Configuration:
    """Return the client configuration: in-cluster service account, or the kubeconfig file and context.

    Raises:
        Conflict: no usable configuration, naming the settings to set.
    """
    configuration = client.Configuration()
    try:
        if settings.in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, TypeError) as exc:
        where = "in-cluster service account" if settings.in_cluster else "kubeconfig"
        raise Conflict(
            f"no Kubernetes cluster configured ({where}: {exc}); set STUDIO_K8S__KUBECONFIG and "
            "STUDIO_K8S__CONTEXT, or STUDIO_K8S__IN_CLUSTER=true when running in a pod",
            param="STUDIO_K8S__KUBECONFIG",
            code="kubernetes_not_configured",
        ) from None
    return configuration


def deployment_state(deployment: dict[str, Any]) -> tuple[DeploymentState, str]:
    """Return ("deploying" | "ready" | "failed", message) from a Deployment's wire JSON."""
    meta, spec, status = (
        deployment.get("metadata", {}),
        deployment.get("spec", {}),
        deployment.get("status") or {},
    )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing")
    if progressing and progressing.get("status") == "False":
        return "failed", f"{progressing.get('reason', 'Progressing=False')}: {progressing.get('message', '')}"
    replica_failure = conditions.get("ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        return (
            "failed",
            f"{replica_failure.get('reason', 'ReplicaFailure')}: {replica_failure.get('message', '')}",
        )
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return "deploying", "waiting for the Deployment controller to see the latest spec"
    want = spec.get("replicas", 1)
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    if want == 0:
        return "ready", "scaled to zero; a request wakes it"
    available = conditions.get("Available", {}).get("status") == "True"
    if available and ready >= want and updated >= want:
        return "ready", f"{ready}/{want} replicas ready"
    return "deploying", f"{ready}/{want} replicas ready"


def _managed(obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(labels.get(m.MANAGED_BY_LABEL) == m.MANAGED_BY)


def _status_of(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


KINDS = ("PersistentVolumeClaim", "Deployment", "Service", "ScaledObject")


class KubernetesBackend:
    """Applies, follows and deletes model servers on one Kubernetes cluster."""

    def __init__(self, settings: K8sSettings, *, configuration: client.Configuration | None = None) -> None:
        """Raises `Conflict` when no configuration is given and none can be loaded from `settings`."""
        self._settings = settings
        self._calls = BlockingCalls("the Kubernetes API", max_threads=8)
        self._api = client.ApiClient(configuration or load_configuration(settings))
        core, apps, custom = (
            client.CoreV1Api(self._api),
            client.AppsV1Api(self._api),
            client.CustomObjectsApi(self._api),
        )
        timeout = settings.timeout_s
        keda = (m.KEDA_GROUP, m.KEDA_VERSION)
        self._namespaces = core
        self._kinds: dict[str, _Kind] = {
            "PersistentVolumeClaim": _Kind(
                "persistentvolumeclaims",
                "",
                partial(core.read_namespaced_persistent_volume_claim, _request_timeout=timeout),
                partial(core.create_namespaced_persistent_volume_claim, _request_timeout=timeout),
                partial(
                    core.patch_namespaced_persistent_volume_claim,
                    _request_timeout=timeout,
                    _content_type=MERGE_PATCH,
                ),
                partial(core.delete_namespaced_persistent_volume_claim, _request_timeout=timeout),
            ),
            "Deployment": _Kind(
                "deployments",
                "apps",
                partial(apps.read_namespaced_deployment, _request_timeout=timeout),
                partial(apps.create_namespaced_deployment, _request_timeout=timeout),
                partial(
                    apps.patch_namespaced_deployment, _request_timeout=timeout, _content_type=MERGE_PATCH
                ),
                partial(
                    apps.delete_namespaced_deployment,
                    _request_timeout=timeout,
                    propagation_policy="Background",
                ),
            ),
            "Service": _Kind(
                "services",
                "",
                partial(core.read_namespaced_service, _request_timeout=timeout),
                partial(core.create_namespaced_service, _request_timeout=timeout),
                partial(core.patch_namespaced_service, _request_timeout=timeout, _content_type=MERGE_PATCH),
                partial(core.delete_namespaced_service, _request_timeout=timeout),
            ),
            "ScaledObject": _Kind(
                m.SCALED_OBJECTS,
                m.KEDA_GROUP,
                lambda name, ns: custom.get_namespaced_custom_object(
                    *keda, ns, m.SCALED_OBJECTS, name, _request_timeout=timeout
                ),
                lambda ns, body: custom.create_namespaced_custom_object(
                    *keda, ns, m.SCALED_OBJECTS, body, _request_timeout=timeout
                ),
                lambda name, ns, body: custom.patch_namespaced_custom_object(
                    *keda,
                    ns,
                    m.SCALED_OBJECTS,
                    name,
                    body,
                    _request_timeout=timeout,
                    _content_type=MERGE_PATCH,
                ),
                lambda name, ns, body: custom.delete_namespaced_custom_object(
                    *keda, ns, m.SCALED_OBJECTS, name, body=body, _request_timeout=timeout
                ),
            ),
        }

    async def close(self) -> None:
        await asyncio.to_thread(self._api.close)

    def namespace_for(self, client_id: str) -> str:
        """Return the namespace a client's model servers go to (settings, or one per client)."""
        if self._settings.namespace_per_client:
            return k8s_names.namespace_name(self._settings.namespace, client_id)
        return k8s_names.validate_object_name(self._settings.namespace, field="namespace")

    # --- calls ---------------------------------------------------------------------------------------
    async def _call(self, verb: str, resource: str, namespace: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking client call in a thread, with the timeout; translate its errors."""
        try:
            return await self._calls.run_within(self._settings.timeout_s, fn, *args)
        except ApiException as exc:
            raise self._translate(exc, verb=verb, resource=resource, namespace=namespace) from None
        except (TimeoutError, urllib3.exceptions.HTTPError, OSError) as exc:
            host = self._api.configuration.host
            raise Unavailable(
                f"the Kubernetes API at {host} did not answer {verb} {resource} within "
                f"{self._settings.timeout_s:g} s ({type(exc).__name__})",
                code="kubernetes_unavailable",
            ) from None

    @staticmethod
    def _translate(exc: ApiException, *, verb: str, resource: str, namespace: str) -> StudioError:
        body = _status_of(exc)
        message = str(body.get("message") or exc.reason or "")
        status = exc.status or 0
        if status == 403:
            return Forbidden(
                f"Kubernetes denied '{verb}' on '{resource}' in namespace '{namespace}': grant the service "
                f"account the '{verb}' verb on '{resource}' ({message})",
                param=resource,
                code="kubernetes_forbidden",
            )
        if status == 401:
            return Forbidden(
                f"Kubernetes rejected the credentials ({message}); check STUDIO_K8S__KUBECONFIG",
                code="kubernetes_unauthorized",
            )
        if status == 404:
            missing_namespace = (body.get("details") or {}).get("kind") == "namespaces"
            return NotFound(message, code="namespace_not_found" if missing_namespace else "not_found")
        if status == 409:
            return Conflict(message, code="kubernetes_conflict")
        if status in (400, 422):
            return InvalidInput(f"Kubernetes refused the {resource}: {message}", code="kubernetes_invalid")
        return Unavailable(
            f"Kubernetes answered {status} to {verb} {resource}: {message}", code="kubernetes_error"
        )

    async def _read(self, kind: _Kind, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            live = await self._call("get", kind.resource, namespace, kind.read, name, namespace)
        except NotFound:
            return None
        return m.wire(live)

    # --- apply -----------------------------------------------------------------------------------------
    async def check(self, spec: m.ModelServerSpec) -> tuple[m.ModelServerManifests, dict[str, Any]]:
        """Render `spec` and read what lives under its name; return both. Writes nothing.

        Raises:
            InvalidInput: a bad name or quantity (before any API call).
            Conflict: an object of the same name not managed by Mini Studio exists.
            Forbidden, Unavailable: as for `apply`.
        """
        namespace = self.namespace_for(spec.client_id)
        manifests = m.render(spec, settings=self._settings, namespace=namespace)
        live = {kind: await self._read(self._kinds[kind], manifests.name, namespace) for kind in KINDS}
        for kind, obj in live.items():
            if obj is not None and not _managed(obj):
                raise Conflict(
                    f"a {kind} named '{manifests.name}' already exists in namespace '{namespace}' and is "
                    f"not managed by Mini Studio (no {m.MANAGED_BY_LABEL}={m.MANAGED_BY} label); "
                    "it is left untouched",
                    param="model",
                    code="kubernetes_object_exists",
                )
        return manifests, live

    async def apply(self, spec: m.ModelServerSpec) -> K8sDeployment:
        """Create or update the PVC, Deployment, Service and ScaledObject serving `spec`.

        Idempotent: objects whose live spec-hash annotation matches are not written.

        Raises:
            InvalidInput: a bad name or quantity (before any API call), or the API server refused a field.
            Conflict: an object of the same name not managed by Mini Studio exists, or the namespace is
                missing (and not one per client).
            Forbidden: the API answered 403 (the message names the verb and resource).
            Unavailable: the API is unreachable or timed out.
        """
        manifests, live = await self.check(spec)
        namespace = manifests.namespace
        desired = {
            "PersistentVolumeClaim": m.wire(manifests.pvc),
            "Deployment": m.wire(manifests.deployment),
            "Service": m.wire(manifests.service),
            "ScaledObject": manifests.scaled_object,
        }
        for kind, body in desired.items():
            await self._apply_one(self._kinds[kind], body, live[kind], namespace)
        return K8sDeployment(manifests.name, namespace, manifests.service_url)

    async def _apply_one(
        self, kind: _Kind, body: dict[str, Any], live: dict[str, Any] | None, namespace: str
    ) -> None:
        name = body["metadata"]["name"]
        if live is None:
            try:
                await self._create(kind, body, namespace)
                return
            except Conflict:  # created between our read and write: fall through to the update
                live = await self._read(kind, name, namespace)
                if live is None or not _managed(live):
                    raise
        wanted = body["metadata"]["annotations"][m.SPEC_HASH_ANNOTATION]
        patch = copy.deepcopy(body)
        if kind.plural == "deployments":
            patch["spec"].pop("replicas", None)  # KEDA owns the replica count once created
        if kind.plural == "persistentvolumeclaims":
            patch["spec"] = {"resources": patch["spec"]["resources"]}  # the rest of a PVC spec is immutable
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            if live is None or not _managed(live):
                raise Conflict(
                    f"the {kind.resource} '{name}' was deleted or taken over while being updated",
                    code="kubernetes_conflict",
                )
            if (live["metadata"].get("annotations") or {}).get(m.SPEC_HASH_ANNOTATION) == wanted:
                return
            # The patch applies only to the version read: a concurrent writer (KEDA scaling, say) makes it a
            # 409 rather than a lost update; then read again and retry.
            patch["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            try:
                await self._call("patch", kind.resource, namespace, kind.patch, name, namespace, patch)
                return
            except Conflict:
                if attempt == UPDATE_ATTEMPTS:
                    raise
            live = await self._read(kind, name, namespace)

    async def _create(self, kind: _Kind, body: dict[str, Any], namespace: str) -> None:
        try:
            await self._call("create", kind.resource, namespace, kind.create, namespace, body)
        except NotFound as exc:
            if exc.code != "namespace_not_found":
                # A 404 on a create is the resource type itself missing (the KEDA CRD not installed).
                raise Conflict(
                    f"the Kubernetes cluster does not serve {kind.resource} ({exc.message}); "
                    + ("install KEDA" if kind.group == m.KEDA_GROUP else "check the cluster's API version"),
                    param=kind.resource,
                    code="kubernetes_resource_missing",
                ) from None
            if not self._settings.namespace_per_client:
                raise Conflict(
                    f"namespace '{namespace}' does not exist on the Kubernetes cluster; create it or set "
                    "STUDIO_K8S__NAMESPACE to one that does (or STUDIO_K8S__NAMESPACE_PER_CLIENT=true)",
                    param="STUDIO_K8S__NAMESPACE",
                    code="namespace_missing",
                ) from None
            await self._create_namespace(namespace)
            await self._call("create", kind.resource, namespace, kind.create, namespace, body)

    async def _create_namespace(self, namespace: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {m.MANAGED_BY_LABEL: m.MANAGED_BY}},
        }
        with contextlib.suppress(Conflict):  # created meanwhile
            await self._call(
                "create",
                "namespaces",
                namespace,
                partial(self._namespaces.create_namespace, _request_timeout=self._settings.timeout_s),
                body,
            )

    # --- follow and delete -----------------------------------------------------------------------------
    async def status(self, name: str, *, namespace: str | None = None) -> tuple[DeploymentState, str]:
        """Return the state of model server `name` and a message (replicas ready, or why it failed).

        Raises:
            NotFound: no Deployment `name` managed by Mini Studio.
            Forbidden, Unavailable: as for `apply`.
        """
        namespace = namespace or self._settings.namespace
        deployment = await self._read(self._kinds["Deployment"], name, namespace)
        if deployment is None or not _managed(deployment):
            raise NotFound(f"no model server '{name}' in namespace '{namespace}'", param="name")
        return deployment_state(deployment)

    async def delete(self, name: str, *, namespace: str | None = None) -> list[str]:
        """Delete the ScaledObject, Service, Deployment and PVC named `name`; return the kinds deleted.

        Missing objects are fine; objects not managed by Mini Studio are left alone.

        Raises:
            Forbidden, Unavailable: as for `apply`.
        """
        namespace = namespace or self._settings.namespace
        deleted = []
        for kind_name in ("ScaledObject", "Service", "Deployment", "PersistentVolumeClaim"):
            kind = self._kinds[kind_name]
            live = await self._read(kind, name, namespace)
            if live is None or not _managed(live):
                continue
            # The uid precondition: never delete an object that replaced ours under the same name.
            options = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=live["metadata"]["uid"])
            )
            try:
                await self._call(
                    "delete", kind.resource, namespace, partial(kind.delete, name, namespace, body=options)
                )
            except NotFound:
                continue
            deleted.append(kind_name)
        return deleted
