"""In-memory state of the fake Kubernetes API server: objects, API semantics and a Deployment controller.

THIS IS A FAKE, for tests only (no real API server can be installed here). See `tests/k8s_fake/__init__.py`
for exactly what it checks and what it does not.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.k8s_fake import selectors
from tests.k8s_fake.schemas import SchemaError, validate_manifest

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps`, `services`: how the API server names a resource in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = {
    (r.group, r.version, r.plural): r
    for r in (
        Resource("", "v1", "namespaces", "Namespace", namespaced=False),
        Resource("", "v1", "services", "Service"),
        Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
        Resource("apps", "v1", "deployments", "Deployment"),
        Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    )
}
USER = "system:serviceaccount:mini-studio:mini-studio"
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class ApiError(Exception):
    """Becomes a Kubernetes `Status` body with `code`."""

    def __init__(
        self, code: int, reason: str, message: str, *, res: Resource | None = None, name: str | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.res, self.name = code, reason, message, res, name
        self.causes: list[dict[str, str]] = []

    def status(self) -> Obj:
        details: Obj = {}
        if self.name:
            details["name"] = self.name
        if self.res is not None:
            details["kind"] = self.res.plural
            if self.res.group:
                details["group"] = self.res.group
        if self.causes:
            details["causes"] = self.causes
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        }


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', res=res, name=name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _apply_defaults(res: Resource, obj: Obj, old: Obj | None) -> None:
    """A few of the defaults the real API server fills in, so clients cannot compare naively."""
    spec = obj.setdefault("spec", {})
    if res.kind == "Deployment":
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        )
        pod = spec.get("template", {}).setdefault("spec", {})
        pod.setdefault("restartPolicy", "Always")
        pod.setdefault("dnsPolicy", "ClusterFirst")
        for container in pod.get("containers", []):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("imagePullPolicy", "IfNotPresent")
    elif res.kind == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        old_ip = (old or {}).get("spec", {}).get("clusterIP")
        ip = old_ip or f"10.96.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
        spec.setdefault("clusterIP", ip)
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports", []):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif res.kind == "PersistentVolumeClaim":
        spec.setdefault("volumeMode", "Filesystem")
    elif res.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        spec.setdefault("finalizers", ["kubernetes"])


def _initial_status(res: Resource) -> Obj:
    return {"Namespace": {"phase": "Active"}, "PersistentVolumeClaim": {"phase": "Pending"}}.get(res.kind, {})


class FakeCluster:
    """Objects by (plural, namespace, name); every method is thread-safe."""

    def __init__(self, *, ready_delay_s: float = 0.3) -> None:
        self.ready_delay_s = ready_delay_s
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._changed_at: dict[tuple[str, str, str], float] = {}
        self._version = 1000
        self._denied: set[tuple[str, str]] = set()
        self._failing: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests that count calls
        self.latency_s = 0.0  # added to every answer, for timeout tests
        self.uninstalled: set[str] = set()  # plurals answered as an unknown resource (a CRD not installed)
        self.interfere: set[str] = set()  # plurals whose next PATCH meets a concurrent write first

    # --- test controls -------------------------------------------------------------------------------
    def deny(self, verb: str, plural: str) -> None:
        """Answer 403 Forbidden to `verb` (get, list, create, update, patch, delete) on `plural`."""
        with self._lock:
            self._denied.add((verb, plural))

    def uninstall(self, plural: str) -> None:
        """Serve `plural` no more, as a cluster without that CRD (KEDA not installed) answers."""
        with self._lock:
            self.uninstalled.add(plural)

    def concurrent_write(self, res: Resource, namespace: str, name: str) -> None:
        """Another writer changes the object (an annotation), as KEDA or kubectl may do."""
        with self._lock:
            obj = self._objects.get((res.plural, namespace, name))
            if obj is not None:
                obj["metadata"].setdefault("annotations", {})["other-writer/touched"] = self._next_version()
                obj["metadata"]["resourceVersion"] = self._next_version()

    def allow_all(self) -> None:
        with self._lock:
            self._denied.clear()

    def fail_deployment(self, name: str, message: str = "") -> None:
        """Make the controller report Deployment `name` as ProgressDeadlineExceeded."""
        with self._lock:
            self._failing[name] = message or f'ReplicaSet "{name}-7d9f8b6c5" has timed out progressing.'

    def stored(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            obj = self._objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def all(self, plural: str) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for (p, _, _), o in sorted(self._objects.items()) if p == plural]

    # --- API semantics -------------------------------------------------------------------------------
    def authorize(self, verb: str, res: Resource, namespace: str, name: str | None) -> None:
        with self._lock:
            denied = (verb, res.plural) in self._denied
        if denied:
            target = f'{res.qualified} "{name}"' if name else res.qualified
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise ApiError(
                403,
                "Forbidden",
                f'{target} is forbidden: User "{USER}" cannot {verb} resource "{res.plural}" '
                f'in API group "{res.group}"{where}',
                res=res,
                name=name,
            )

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _check_body(self, res: Resource, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        # Like the real server, an empty apiVersion/kind is taken from the URL; a different one is refused.
        body["apiVersion"] = body.get("apiVersion") or res.api_version
        body["kind"] = body.get("kind") or res.kind
        if body["apiVersion"] != res.api_version or body["kind"] != res.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version/kind in the data ({body.get('apiVersion')}/{body.get('kind')}) does not "
                f"match the expected one ({res.api_version}/{res.kind})",
            )
        meta = body.setdefault("metadata", {})
        if res.namespaced and meta.setdefault("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        return body

    def _validate(self, res: Resource, obj: Obj) -> None:
        name = obj["metadata"].get("name") or ""
        try:
            validate_manifest(obj)
        except SchemaError as exc:
            error = ApiError(
                422,
                "Invalid",
                f'{res.kind}.{res.group or "core"} "{name}" is invalid: {exc}',
                res=res,
                name=name,
            )
            error.causes = [{"reason": "FieldValueInvalid", "message": str(exc)}]
            raise error from None
        rule = (
            _DNS_1035 if res.kind == "Service" else _DNS_1123_LABEL if res.kind == "Namespace" else _DNS_1123
        )
        problems = (
            []
            if rule.match(name) and len(name) <= (253 if rule is _DNS_1123 else 63)
            else [("metadata.name", f"Invalid value: {name!r}: not a valid {res.kind} name")]
        )
        for key, value in (obj["metadata"].get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(
                    (f"metadata.labels.{key}", f"Invalid value: {value!r}: not a valid label value")
                )
        if problems:
            text = ", ".join(f"{path}: {why}" for path, why in problems)
            error = ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: [{text}]', res=res, name=name)
            error.causes = [
                {"reason": "FieldValueInvalid", "message": why, "field": path} for path, why in problems
            ]
            raise error

    def _require_namespace(self, res: Resource, namespace: str) -> None:
        if res.namespaced and ("namespaces", "", namespace) not in self._objects:
            ns = RESOURCES[("", "v1", "namespaces")]
            raise not_found(ns, namespace)

    def create(self, res: Resource, namespace: str, body: Any) -> Obj:
        obj = self._check_body(res, namespace, copy.deepcopy(body))
        name = obj["metadata"].get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{res.kind} is invalid: metadata.name: Required value", res=res)
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            obj["metadata"].pop(server_field, None)
        with self._lock:
            self._require_namespace(res, namespace)
            key = (res.plural, namespace if res.namespaced else "", name)
            if key in self._objects:
                raise ApiError(
                    409, "AlreadyExists", f'{res.qualified} "{name}" already exists', res=res, name=name
                )
            _apply_defaults(res, obj, None)
            obj["status"] = _initial_status(res)
            self._validate(res, obj)
            obj["metadata"].update(
                uid=str(uuid.uuid4()),
                resourceVersion=self._next_version(),
                generation=1,
                creationTimestamp=_now(),
            )
            self._objects[key] = obj
            self._changed_at[key] = time.monotonic()
            return copy.deepcopy(obj)

    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((res.plural, namespace if res.namespaced else "", name))
            if obj is None:
                raise not_found(res, name)
            return copy.deepcopy(obj)

    def list(self, res: Resource, namespace: str, label_selector: str | None) -> Obj:
        try:
            matches = selectors.parse(label_selector or "")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from None
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == res.plural
                and (not res.namespaced or not namespace or ns == namespace)
                and matches(obj["metadata"].get("labels") or {})
            ]
            version = str(self._version)
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def update(self, res: Resource, namespace: str, name: str, change: Callable[[Obj], Obj]) -> Obj:
        """Replace or patch: `change(current)` returns the new object; status and identity are kept."""
        with self._lock:
            key = (res.plural, namespace if res.namespaced else "", name)
            old = self._objects.get(key)
            if old is None:
                raise not_found(res, name)
            new = self._check_body(res, namespace, change(copy.deepcopy(old)))
            meta = new["metadata"]
            sent_version = meta.get("resourceVersion")
            if sent_version and sent_version != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    res=res,
                    name=name,
                )
            if (
                meta.get("name", name) != name
                or meta.get("uid", old["metadata"]["uid"]) != old["metadata"]["uid"]
            ):
                raise ApiError(400, "BadRequest", "metadata.name and metadata.uid cannot be changed")
            for server_field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                meta[server_field] = old["metadata"][server_field]
            # Status is a subresource: writes to the main resource never change it.
            new["status"] = copy.deepcopy(old.get("status", {}))
            _apply_defaults(res, new, old)
            self._validate(res, new)
            if new == old:
                return copy.deepcopy(old)  # a no-op write: no new resourceVersion
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"]["generation"] + 1
                self._changed_at[key] = time.monotonic()
            meta["resourceVersion"] = self._next_version()
            self._objects[key] = new
            return copy.deepcopy(new)

    def delete(self, res: Resource, namespace: str, name: str, options: Any) -> Obj:
        with self._lock:
            key = (res.plural, namespace if res.namespaced else "", name)
            obj = self._objects.get(key)
            if obj is None:
                raise not_found(res, name)
            pre = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
            for field, actual in (
                ("uid", obj["metadata"]["uid"]),
                ("resourceVersion", obj["metadata"]["resourceVersion"]),
            ):
                if pre.get(field) and pre[field] != actual:
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {res.qualified} "{name}": Precondition failed: '
                        f"{field} in precondition: {pre[field]}, {field} in object meta: {actual}",
                        res=res,
                        name=name,
                    )
            del self._objects[key]
            self._changed_at.pop(key, None)
            if res.kind == "Namespace":  # deletion is immediate here, not a Terminating phase
                for other in [k for k in self._objects if k[1] == name]:
                    del self._objects[other]
        if res.kind != "Deployment":  # like the real registries: these answer with the deleted object
            return copy.deepcopy(obj)
        details = {"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]}
        if res.group:
            details["group"] = res.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    # --- the Deployment controller -------------------------------------------------------------------
    def reconcile(self) -> None:
        """Move each Deployment's status one step: progressing, then ready (or failed when told)."""
        now = time.monotonic()
        with self._lock:
            for key, obj in self._objects.items():
                if key[0] != "deployments":
                    continue
                meta, spec = obj["metadata"], obj["spec"]
                replicas = spec.get("replicas", 1)
                generation = meta["generation"]
                if key[2] in self._failing:
                    progressing = _condition(
                        "Progressing", "False", "ProgressDeadlineExceeded", self._failing[key[2]]
                    )
                    status = _unavailable(generation, replicas, progressing)
                elif now - self._changed_at.get(key, now) >= self.ready_delay_s or replicas == 0:
                    status = {
                        "observedGeneration": generation,
                        "replicas": replicas,
                        "updatedReplicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                        "conditions": [
                            _condition(
                                "Available",
                                "True",
                                "MinimumReplicasAvailable",
                                "Deployment has minimum availability.",
                            ),
                            _condition(
                                "Progressing",
                                "True",
                                "NewReplicaSetAvailable",
                                f'ReplicaSet "{key[2]}-7d9f8b6c5" has successfully progressed.',
                            ),
                        ],
                    }
                else:
                    progressing = _condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        f'ReplicaSet "{key[2]}-7d9f8b6c5" is progressing.',
                    )
                    status = _unavailable(generation, replicas, progressing)
                if _without_times(obj.get("status", {})) != status:
                    obj["status"] = _with_times(status)
                    meta["resourceVersion"] = self._next_version()


def _unavailable(generation: int, replicas: int, progressing: Obj) -> Obj:
    """A Deployment status with no replica available yet, and the given Progressing condition."""
    unavailable = _condition(
        "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
    )
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "unavailableReplicas": replicas,
        "conditions": [unavailable, progressing],
    }


def _condition(kind: str, status: str, reason: str, message: str) -> Obj:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _with_times(status: Obj) -> Obj:
    stamped = copy.deepcopy(status)
    for condition in stamped.get("conditions", []):
        condition["lastUpdateTime"] = condition["lastTransitionTime"] = _now()
    return stamped


def _without_times(status: Obj) -> Obj:
    bare = copy.deepcopy(status)
    for condition in bare.get("conditions", []):
        condition.pop("lastUpdateTime", None)
        condition.pop("lastTransitionTime", None)
    return bare
