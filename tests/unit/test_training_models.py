"""Base model resolution: a local directory, the built-in tiny model, or a hub id (never the real hub)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants

from studio.training.models import resolve_base_model
from studio.training.tiny_model import TINY_MODEL_NAME, ensure_tiny_model, is_tiny_model
from tests.servers import free_port


class _RepoNotFound(BaseHTTPRequestHandler):
    """Answers every request as the hub does for a model it does not have."""

    def do_GET(self) -> None:
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hub_without_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the hub client at a local server that knows no model."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RepoNotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(hub_constants, "ENDPOINT", url)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_a_local_model_directory_is_used_as_it_is(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_base_model(str(tiny), None) == tiny.resolve()
    monkeypatch.chdir(tiny.parent)
    assert resolve_base_model(tiny.name, Path("elsewhere")) == tiny.resolve()  # relative: made absolute


def test_a_directory_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no config\.json: it is not a model"):
        resolve_base_model(str(tmp_path), None)


def test_the_tiny_model_is_built_once_under_models_dir(tmp_path: Path) -> None:
    results: list[Path] = []

    def resolve() -> None:
        results.append(resolve_base_model(TINY_MODEL_NAME, tmp_path))

    threads = [threading.Thread(target=resolve) for _ in range(2)]  # two jobs starting at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "tiny-llama"] * 2 and is_tiny_model(tmp_path / "tiny-llama")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-llama"]
    weights = (tmp_path / "tiny-llama" / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model(TINY_MODEL_NAME, tmp_path) == tmp_path / "tiny-llama"
    assert (tmp_path / "tiny-llama" / "model.safetensors").stat().st_mtime_ns == weights


def test_an_unknown_hub_id_offline_fails_at_once_naming_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read once, when the hub client loads
    started = time.monotonic()
    with pytest.raises(OSError, match=r"'no-such-org/no-such-model' is not in .*hub and the .* cannot be"):
        resolve_base_model("no-such-org/no-such-model", tmp_path)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "tiny-llama").exists()


def test_a_model_the_hub_does_not_have_is_a_user_error(tmp_path: Path, hub_without_models: str) -> None:
    with pytest.raises(ValueError, match=r"'no-such-org/no-such-model' .* the Hugging Face hub has no such"):
        resolve_base_model("no-such-org/no-such-model", tmp_path)


def test_an_unreachable_hub_is_a_platform_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(OSError, match="cannot be reached") as caught:
        resolve_base_model("some-org/some-model", tmp_path)
    assert not isinstance(caught.value, ValueError)


def test_an_invalid_name_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a local directory, 'mini-studio/tiny-llama' or a valid"):
        resolve_base_model("no such model//at all", tmp_path)
