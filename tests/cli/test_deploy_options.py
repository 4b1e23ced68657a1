"""`mini-studio deploy`'s engine flags, in-process against a mock API: what the command sends, checked
against the API's own request schema (so a flag cannot name a field the server would refuse)."""

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
from studio.schemas.deployments import DeploymentCreate

MODEL = "meta-llama/Llama-3.1-70B"


def run_deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str) -> dict[str, Any]:
    """Run `deploy MODEL --no-wait --json *flags`; return the body the command posted."""
    posted: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/deployments")
        posted.append(json.loads(request.content))
        return httpx.Response(201, json={"id": "dep-1", "model": MODEL, "status": "deploying"})

    def client(url: str, key: str | None, *, timeout_s: float) -> ApiClient:
        return ApiClient(url, key, timeout_s=timeout_s, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(context, "ApiClient", client)
    monkeypatch.setattr(deploy, "POLL_S", 0)
    monkeypatch.setenv("MINI_STUDIO_CONFIG", str(tmp_path / "config.toml"))
    result = CliRunner().invoke(app, ["--api-key", "k", "deploy", MODEL, "--no-wait", "--json", *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    (body,) = posted
    return body


def test_parallel_sizes_are_sent_as_engine_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    body = run_deploy(
        monkeypatch,
        tmp_path,
        "--num-gpus", "8", "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2",
        "--max-model-len", "8192",
    )  # fmt: skip
    assert body == {
        "model": MODEL,
        "num_gpus": 8.0,
        "engine": {"max_model_len": 8192, "tensor_parallel_size": 4, "pipeline_parallel_size": 2},
    }
    parsed = DeploymentCreate.model_validate(body)
    assert parsed.engine.tensor_parallel_size == 4 and parsed.engine.pipeline_parallel_size == 2


def test_without_engine_flags_no_engine_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run_deploy(monkeypatch, tmp_path, "--num-gpus", "2") == {"model": MODEL, "num_gpus": 2.0}
    only_tp = run_deploy(monkeypatch, tmp_path, "--tensor-parallel-size", "2")
    assert only_tp == {"model": MODEL, "engine": {"tensor_parallel_size": 2}}


def test_a_size_below_one_is_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINI_STUDIO_CONFIG", str(tmp_path / "config.toml"))
    result = CliRunner().invoke(app, ["--api-key", "k", "deploy", MODEL, "--tensor-parallel-size", "0"])
    assert result.exit_code == 2 and "tensor-parallel-size" in result.output


def test_max_adapters_0_asks_for_a_lora_less_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    body = run_deploy(monkeypatch, tmp_path, "--max-adapters", "0")
    assert body == {"model": MODEL, "engine": {"max_adapters": 0}}
    assert DeploymentCreate.model_validate(body).engine.max_adapters == 0
