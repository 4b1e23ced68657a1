"""Commands in-process against a mock API (typer's runner): the steps a command takes, without a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from studio.cli import context, deploy
from studio.cli.client import ApiClient
from studio.cli.main import app

FT = "ft:mini-studio/tiny-llama:client-1:cli:ftjob-1"


class FakeDeployments:
    """A LoRA fine-tune whose base is not deployed yet: the first deploy is refused with 409."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.deployed: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path == "/v1/deployments":
            model = json.loads(request.content)["model"]
            if model == FT and "mini-studio/tiny-llama" not in self.deployed:
                error = {"message": "deploy the base model first", "code": "base_not_deployed"}
                return httpx.Response(409, json={"error": error})
            deployment = {"id": f"dep-{len(self.deployed)}", "model": model, "status": "deploying"}
            self.deployed[model] = deployment
            return httpx.Response(201, json=deployment)
        if request.url.path == f"/v1/models/{FT}":
            return httpx.Response(200, json={"id": FT, "base_model": "mini-studio/tiny-llama"})
        for deployment in self.deployed.values():
            if request.url.path == f"/v1/deployments/{deployment['id']}":
                return httpx.Response(200, json={**deployment, "status": "ready"})
        return httpx.Response(404, json={"error": {"message": "not found"}})


def test_deploy_with_base_deploys_the_base_first_then_the_adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeDeployments()

    def client(url: str, key: str | None, *, timeout_s: float) -> ApiClient:
        return ApiClient(url, key, timeout_s=timeout_s, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(context, "ApiClient", client)
    monkeypatch.setattr(deploy, "POLL_S", 0)
    monkeypatch.setenv("MINI_STUDIO_CONFIG", str(tmp_path / "config.toml"))
    result = CliRunner().invoke(app, ["--api-key", "k", "deploy", FT, "--with-base", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)["status"] == "ready"
    assert fake.calls == [
        "POST /v1/deployments",  # refused: the base is not deployed
        f"GET /v1/models/{FT}",
        "POST /v1/deployments",  # the base
        "GET /v1/deployments/dep-0",
        "POST /v1/deployments",  # the adapter
        "GET /v1/deployments/dep-1",
    ]

    refused = FakeDeployments()
    monkeypatch.setattr(
        context,
        "ApiClient",
        lambda url, key, *, timeout_s: ApiClient(
            url, key, timeout_s=timeout_s, transport=httpx.MockTransport(refused)
        ),
    )
    without = CliRunner().invoke(app, ["--api-key", "k", "deploy", FT])
    assert without.exception is not None and "deploy the base model first" in str(without.exception)
