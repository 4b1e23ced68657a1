"""The fake Kubernetes API server's HTTP side: real HTTP (uvicorn + Starlette) on a free local port.

THIS IS A FAKE, for tests only; see `tests/k8s_fake/__init__.py` for what it checks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.k8s_fake.cluster import RESOURCES, ApiError, FakeCluster, Resource, merge_patch

_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def _route(path: str) -> tuple[Resource, str, str | None, str | None]:
    """Return (resource, namespace, name, subresource) for an API path, or raise 404."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespaces = RESOURCES[("", "v1", "namespaces")]
    if group == "" and rest and rest[0] == "namespaces" and len(rest) <= 2:
        return namespaces, "", rest[1] if len(rest) == 2 else None, None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in RESOURCES:
        res = RESOURCES[(group, version, rest[2])]
        return res, rest[1], rest[3] if len(rest) > 3 else None, rest[4] if len(rest) > 4 else None
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


def build_app(cluster: FakeCluster) -> Starlette:
    async def handle(request: Request) -> Response:
        method = request.method
        cluster.requests.append((method, request.url.path))
        try:
            if cluster.latency_s:
                await asyncio.sleep(cluster.latency_s)
            res, namespace, name, sub = _route(request.url.path)
            if res.plural in cluster.uninstalled:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if sub is not None:
                raise ApiError(404, "NotFound", "subresources are not served by this fake")
            raw = await request.body()
            body: Any = json.loads(raw) if raw else None
            if name is None:
                if method == "GET":
                    cluster.authorize("list", res, namespace, None)
                    return JSONResponse(
                        cluster.list(res, namespace, request.query_params.get("labelSelector"))
                    )
                if method == "POST":
                    cluster.authorize("create", res, namespace, None)
                    return JSONResponse(cluster.create(res, namespace, body), status_code=201)
            else:
                if method == "GET":
                    cluster.authorize("get", res, namespace, name)
                    return JSONResponse(cluster.get(res, namespace, name))
                if method == "PUT":
                    cluster.authorize("update", res, namespace, name)
                    return JSONResponse(cluster.update(res, namespace, name, lambda _old: body))
                if method == "PATCH":
                    cluster.authorize("patch", res, namespace, name)
                    if res.plural in cluster.interfere:
                        cluster.interfere.discard(res.plural)
                        cluster.concurrent_write(res, namespace, name)
                    kind = request.headers.get("content-type", "").split(";")[0].strip()
                    if kind == "application/json-patch+json" and not isinstance(body, list):
                        raise ApiError(
                            400,
                            "BadRequest",
                            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                        )
                    if kind not in _MERGE_TYPES:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            f"the body of the request was in an unknown format: {kind}",
                        )
                    return JSONResponse(
                        cluster.update(res, namespace, name, lambda old: merge_patch(old, body))
                    )
                if method == "DELETE":
                    cluster.authorize("delete", res, namespace, name)
                    return JSONResponse(cluster.delete(res, namespace, name, body))
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        except ApiError as exc:
            return JSONResponse(exc.status(), status_code=exc.code)
        except json.JSONDecodeError as exc:
            return JSONResponse(ApiError(400, "BadRequest", f"invalid JSON: {exc}").status(), status_code=400)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


class FakeKubernetes:
    """Starts the fake API server and its Deployment controller in background threads.

    `with FakeKubernetes() as fake:` then point `kubernetes.client.Configuration(host=fake.url)` at it.
    """

    def __init__(self, *, ready_delay_s: float = 0.3, controller_interval_s: float = 0.05) -> None:
        self.cluster = FakeCluster(ready_delay_s=ready_delay_s)
        self._interval = controller_interval_s
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(build_app(self.cluster), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True),
            threading.Thread(target=self._control, daemon=True),
        ]

    def _control(self) -> None:
        while not self._stop.wait(self._interval):
            self.cluster.reconcile()

    def start(self) -> FakeKubernetes:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake Kubernetes API server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
