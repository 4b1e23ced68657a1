"""A FAKE Kubernetes API server for tests. It is not Kubernetes; no real API server can be installed here.

What it is: real HTTP (uvicorn + Starlette on a free 127.0.0.1 port) that the official, unmodified
`kubernetes` Python client talks to (`Configuration(host=fake.url)`), serving only:
namespaces (v1), services and persistentvolumeclaims (v1), deployments (apps/v1) and scaledobjects
(keda.sh/v1alpha1); verbs create (POST), get, list (with `labelSelector`: `=`, `==`, `!=`, `in`, `notin`,
exists, `!key`), replace (PUT), patch and delete.

What it checks, answering with Kubernetes `Status` bodies (kind, reason, message, details, code):
- 404 NotFound for a missing object, and for a create in a namespace that does not exist
  (`namespaces "x" not found`);
- 409 AlreadyExists on a create of an existing name; 409 Conflict on a PUT or PATCH whose
  `metadata.resourceVersion` is stale, and on a DELETE whose `preconditions` (uid, resourceVersion) fail;
- 422 Invalid when the resulting object fails the same strict schemas as the unit tests
  (`tests/k8s_fake/schemas.py`: kubernetes-validate 1.37 for core objects, KEDA's CRD schema for
  ScaledObjects), an invalid `metadata.name` (DNS-1035 for Services, DNS-1123 otherwise) or label value;
- 400 BadRequest for a body whose apiVersion/kind or namespace does not match the URL, and for a JSON
  object sent as `application/json-patch+json`; 415 for other patch types than merge patch;
- 403 Forbidden for a (verb, resource) a test denied with `cluster.deny(verb, plural)`, with the
  real message (`... cannot create resource "deployments" in API group "apps" in the namespace "x"`).

Test controls besides `deny` and `fail_deployment`: `cluster.uninstall(plural)` answers that resource as
unknown (404 with no details, as a cluster without the KEDA CRD does); `cluster.latency_s` delays every
answer (timeouts); a plural added to `cluster.interfere` has its next PATCH preceded by another
writer's change (a stale resourceVersion for the client).

Object bookkeeping: `metadata.uid`, `creationTimestamp`, a cluster-wide increasing `resourceVersion`
(unchanged by a write that changes nothing), `generation` (on every kind here; bumped only when `spec`
changes); `status` is a subresource (writes to the object never change it); a few server defaults
(Deployment strategy, replicas, revisionHistoryLimit, progressDeadlineSeconds, pod restart/DNS policy,
container pull policy; Service clusterIP, sessionAffinity, port protocol/targetPort; PVC volumeMode).
Patch: `application/merge-patch+json` per RFC 7386; `application/strategic-merge-patch+json` is treated
as a merge patch (lists are replaced, not merged by key as the real server does).

The controller (a thread) moves each Deployment to "progressing" (Available=False, Progressing=True),
then, `ready_delay_s` after its last spec change, to ready (replicas, updatedReplicas, readyReplicas,
availableReplicas = spec.replicas, observedGeneration, Available=True); one named with
`cluster.fail_deployment(name)` gets Progressing=False, reason ProgressDeadlineExceeded.

What it does NOT do: watches, server-side apply, dry run, field selectors, pagination, admission,
finalizers or graceful deletion (deletes are immediate, a namespace's objects go with it, a PVC has no
protection finalizer), ReplicaSets or
Pods, KEDA itself (no scaling), authentication (any token is accepted).
"""

from tests.k8s_fake.cluster import FakeCluster
from tests.k8s_fake.schemas import SchemaError, validate_manifest
from tests.k8s_fake.server import FakeKubernetes

__all__ = ["FakeCluster", "FakeKubernetes", "SchemaError", "validate_manifest"]
