"""Tenants and keys: admin creates clients and keys; keys authenticate; bad keys get 401/403."""

from __future__ import annotations

import httpx

from tests.api.conftest import ADMIN, new_client


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


async def test_admin_creates_client_and_key_that_authenticates(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api, "acme")
    me = await api.get("/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["id"] == client_id
    assert me.json()["name"] == "acme"
    assert me.json()["limits"]["requests_per_minute"] == 600


async def test_key_secret_is_shown_once_and_stored_hashed(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api)
    keys = await api.get(f"/admin/clients/{client_id}/keys", headers=ADMIN)
    assert keys.status_code == 200
    (listed,) = keys.json()["data"]
    assert "secret" not in listed and "key_hash" not in listed
    secret = headers["Authorization"].removeprefix("Bearer ")
    assert listed["hint"].endswith(secret[-4:])
    assert secret not in keys.text


async def test_missing_wrong_and_malformed_keys_get_401(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/me"), 401, "missing_api_key")
    assert_error(
        await api.get("/v1/me", headers={"Authorization": "Bearer sk-ms-wrong"}), 401, "invalid_api_key"
    )
    assert_error(await api.get("/v1/me", headers={"Authorization": "Basic abc"}), 401, "missing_api_key")


async def test_client_key_is_not_an_admin_key(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api)
    assert_error(await api.get("/admin/clients", headers=headers), 401)
    assert_error(await api.get("/admin/clients"), 401, "missing_api_key")


async def test_disabled_client_gets_403_and_enabled_again_works(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api)
    assert (await api.get("/v1/me", headers=headers)).status_code == 200  # fills the cache
    disabled = await api.post(f"/admin/clients/{client_id}/disable", headers=ADMIN)
    assert disabled.json()["disabled"] is True
    assert_error(await api.get("/v1/me", headers=headers), 403, "client_disabled")
    await api.post(f"/admin/clients/{client_id}/enable", headers=ADMIN)
    assert (await api.get("/v1/me", headers=headers)).status_code == 200


async def test_disabled_key_gets_401_other_keys_still_work(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api)
    second = (await api.post(f"/admin/clients/{client_id}/keys", json={"name": "ci"}, headers=ADMIN)).json()
    assert (await api.get("/v1/me", headers=headers)).status_code == 200
    keys = (await api.get(f"/admin/clients/{client_id}/keys", headers=ADMIN)).json()["data"]
    first_id = next(key["id"] for key in keys if key["name"] == "default")
    assert (
        await api.post(f"/admin/clients/{client_id}/keys/{first_id}/disable", headers=ADMIN)
    ).status_code == 200
    assert_error(await api.get("/v1/me", headers=headers), 401, "invalid_api_key")
    ok = await api.get("/v1/me", headers={"Authorization": f"Bearer {second['secret']}"})
    assert ok.status_code == 200


async def test_keys_of_one_client_never_reach_another(api: httpx.AsyncClient) -> None:
    first, _ = await new_client(api, "first")
    second, _ = await new_client(api, "second")
    keys = (await api.get(f"/admin/clients/{first}/keys", headers=ADMIN)).json()["data"]
    wrong = await api.post(f"/admin/clients/{second}/keys/{keys[0]['id']}/disable", headers=ADMIN)
    assert_error(wrong, 404, "key_not_found")
    assert_error(await api.get("/admin/clients/client-nope", headers=ADMIN), 404, "client_not_found")
    assert_error(await api.post("/admin/clients/client-nope/keys", headers=ADMIN), 404, "client_not_found")


async def test_clients_list_pages(api: httpx.AsyncClient) -> None:
    ids = sorted([(await new_client(api, f"c{i}"))[0] for i in range(3)])
    first = (await api.get("/admin/clients", params={"limit": 2}, headers=ADMIN)).json()
    assert first["object"] == "list" and first["has_more"] is True and len(first["data"]) == 2
    rest = (await api.get("/admin/clients", params={"after": first["data"][-1]["id"]}, headers=ADMIN)).json()
    seen = [row["id"] for row in first["data"] + rest["data"]]
    assert seen == ids and rest["has_more"] is False


async def test_rate_limit_answers_429_with_retry_after(api: httpx.AsyncClient) -> None:
    _, headers = await new_client(api, requests_per_minute=3)
    statuses = [(await api.get("/v1/me", headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await api.get("/v1/me", headers=headers)
    assert_error(limited, 429, "rate_limit_exceeded")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_admin_changes_limits_merged_and_seen_at_once(api: httpx.AsyncClient) -> None:
    client_id, headers = await new_client(api, "tuned")
    assert (await api.get("/v1/me", headers=headers)).json()["limits"]["max_concurrent_jobs"] == 2  # cached
    patched = await api.patch(
        f"/admin/clients/{client_id}", json={"limits": {"max_concurrent_jobs": 0}}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    limits = (await api.get("/v1/me", headers=headers)).json()["limits"]
    assert limits["max_concurrent_jobs"] == 0 and limits["requests_per_minute"] == 600  # the rest kept
    renamed = await api.patch(f"/admin/clients/{client_id}", json={"name": "renamed"}, headers=ADMIN)
    assert renamed.json()["name"] == "renamed" and renamed.json()["limits"]["max_concurrent_jobs"] == 0
    wrong = await api.patch(
        f"/admin/clients/{client_id}", json={"limits": {"max_deployments": -1}}, headers=ADMIN
    )
    assert wrong.status_code == 400 and "max_deployments" in wrong.text
    assert_error(
        await api.patch("/admin/clients/client-nope", json={}, headers=ADMIN), 404, "client_not_found"
    )
    assert_error(await api.patch(f"/admin/clients/{client_id}", json={}, headers=headers), 401)
