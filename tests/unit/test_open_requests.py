"""The cap on one client's open requests (per replica): 429 past it, others unaffected, freed at the end."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from studio.api.open_requests import OpenRequestLimit


def app_holding(release: asyncio.Event) -> tuple[OpenRequestLimit, ASGIApp]:
    """Return the limit (max 2 open) around an app that holds each response until `release`, and the
    app as a client reaches it (the client's id taken from an `x-client` header, as the gate would)."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()  # a stream held open
        await send({"type": "http.response.body", "body": b"done"})

    async def identified(scope: Scope, receive: Receive, send: Send) -> None:
        # What the auth gate leaves in the scope's state.
        scope.setdefault("state", {})["client_id"] = dict(scope["headers"]).get(b"x-client", b"").decode()
        await limit(scope, receive, send)

    limit = OpenRequestLimit(slow, max_open=2)
    return limit, identified


async def until_open(limit: OpenRequestLimit, client: str, count: int) -> None:
    for _ in range(500):
        if limit.open_requests(client) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{client} never had {count} requests open")


async def test_a_client_past_its_open_requests_gets_429_others_go_on() -> None:
    release = asyncio.Event()
    limit, app = app_holding(release)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio") as http:
        held = [asyncio.create_task(http.get("/", headers={"x-client": "greedy"})) for _ in range(2)]
        await until_open(limit, "greedy", 2)
        refused = await http.get("/", headers={"x-client": "greedy"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_open_requests"
        other = asyncio.create_task(http.get("/", headers={"x-client": "polite"}))
        await until_open(limit, "polite", 1)
        release.set()
        assert [(await task).status_code for task in (*held, other)] == [200, 200, 200]
        assert limit.open_requests("greedy") == 0
        assert (await http.get("/", headers={"x-client": "greedy"})).status_code == 200
