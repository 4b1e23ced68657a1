"""The whole app on Ray Serve: health, admin, keys, request ids in the JSON log, restarts keep data."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration


def test_health_and_readiness_through_the_proxy(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ok", ready
    assert {name: check["status"] for name, check in ready["checks"].items()} == {
        "mongodb": "ok",
        "redis": "ok",
        "s3": "ok",
    }


def test_admin_creates_client_and_key_used_through_every_replica(
    http: httpx.Client, serve_app: ServeApp
) -> None:
    created = http.post("/admin/clients", json={"name": "acme"}, headers=serve_app.admin)
    assert created.status_code == 201, created.text
    client_id = created.json()["id"]
    key = http.post(f"/admin/clients/{client_id}/keys", headers=serve_app.admin).json()["secret"]
    # Two ingress replicas share the one embedded database: every request succeeds, whichever serves it.
    for _ in range(10):
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["id"] == client_id
    wrong = http.get("/v1/me", headers={"Authorization": "Bearer sk-ms-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"


def test_request_id_comes_back_and_is_in_the_json_log(http: httpx.Client, serve_app: ServeApp) -> None:
    response = http.get("/healthz", headers={"X-Request-ID": "integration-trace-7"})
    assert response.headers.get_list("x-request-id") == ["integration-trace-7"]
    log_dir = serve_app.settings.log_dir
    deadline = time.monotonic() + 10
    entries: list[dict[str, object]] = []
    while time.monotonic() < deadline and not entries:
        lines = [
            json.loads(line)
            for path in log_dir.glob("studio-*.jsonl")
            for line in path.read_text().splitlines()
        ]
        entries = [line for line in lines if line.get("request_id") == "integration-trace-7"]
        time.sleep(0.2)
    (entry,) = entries
    assert entry["logger"] == "studio.access" and entry["status"] == 200 and entry["path"] == "/healthz"


def test_data_survives_restart_of_the_database_and_the_app(http: httpx.Client, serve_app: ServeApp) -> None:
    import ray
    from ray import serve

    from studio.app.builder import build_app_from_settings
    from studio.app.embedded import EMBEDDED_MONGO_ACTOR

    created = http.post("/admin/clients", json={"name": "durable"}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{created['id']}/keys", headers=serve_app.admin).json()["secret"]

    # Stop the app and the embedded database, then start both again from the files on disk.
    serve.delete(serve_app.settings.serving.app_name)
    actor = ray.get_actor(EMBEDDED_MONGO_ACTOR, namespace=serve_app.settings.ray.namespace)
    ray.kill(actor, no_restart=True)
    serve.run(
        build_app_from_settings(serve_app.settings),
        name=serve_app.settings.serving.app_name,
        route_prefix="/",
    )

    me = http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["name"] == "durable"
