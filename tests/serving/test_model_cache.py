"""The model servers' node cache of `s3://` folders on the real S3 server (SeaweedFS): fetched once,
bounded in bytes with the least recently used folders evicted whole, and only where the folder itself is
not on the node."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from studio.serving.model_cache import ModelCache, local_model, node_local
from tests.conftest import S3Endpoint


@pytest.fixture
def cache_root(tmp_path: Path, s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Path:
    # As a replica gets them: the node's cache folder and the S3 credentials in its environment.
    monkeypatch.setenv("STUDIO_NODE_CACHE_DIR", str(tmp_path / "node-cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_key)
    return tmp_path / "node-cache"


def test_folders_are_fetched_once_and_the_least_recently_used_go_past_the_bound(
    cache_root: Path, s3_endpoint: S3Endpoint
) -> None:
    run = uuid.uuid4().hex[:8]
    adapter = s3_endpoint.put_folder(
        f"c/jobs/{run}-a/final", {"adapter_config.json": b"{}", "w/x.bin": b"a" * 1000}
    )
    other = s3_endpoint.put_folder(
        f"c/jobs/{run}-b/final", {"adapter_config.json": b"{}", "x.bin": b"b" * 1000}
    )
    # A base model the trainer built in the node's cache: not the cache's to evict.
    built = cache_root / "models" / "tiny"
    built.mkdir(parents=True)
    (built / "weights.bin").write_bytes(b"m" * 5000)
    cache = ModelCache(
        max_bytes=1500, endpoint_url=s3_endpoint.endpoint_url, region="us-east-1", timeout_s=10
    )

    first = Path(cache.local(adapter))
    assert first.parent == cache_root / "s3-models" == cache.directory
    assert (first / "w" / "x.bin").read_bytes() == b"a" * 1000
    (first / "marker").write_text("kept")  # a second call must not fetch it again
    assert cache.local(adapter) == str(first) and (first / "marker").is_file()

    second = Path(cache.local(other))  # both do not fit 1500 bytes: the least recently used goes, whole
    assert cache.cached() == [second] and not first.exists()
    assert (built / "weights.bin").is_file()
    assert Path(cache.local(adapter)) == first and cache.cached() == [first]  # fetched again when asked

    assert cache.local("/a/local/folder") == "/a/local/folder"  # not the cache's business
    with pytest.raises(FileNotFoundError):
        cache.local(f"s3://{s3_endpoint.bucket}/c/jobs/{run}-missing/final")


def test_a_folder_on_the_node_is_read_in_place_else_its_s3_copy_and_scratch_moves_to_the_cache(
    cache_root: Path, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    uri = s3_endpoint.put_folder(f"c/jobs/{uuid.uuid4().hex[:8]}/final", {"adapter_config.json": b"{}"})
    cache = ModelCache(endpoint_url=s3_endpoint.endpoint_url, region="us-east-1", timeout_s=10)
    here = tmp_path / "shared" / "final"
    here.mkdir(parents=True)
    assert local_model(str(here), uri, cache) == str(here)  # a shared folder (or the node that trained)
    fetched = local_model(str(tmp_path / "elsewhere" / "final"), uri, cache)
    assert Path(fetched).parent == cache.directory
    assert local_model("/not/here", None, cache) == "/not/here"  # no S3 copy: the path, as before
    assert local_model("/not/here", uri, None) == "/not/here"  # no S3 configured

    assert node_local(tmp_path / "shared" / "vllm") == tmp_path / "shared" / "vllm"
    assert node_local(tmp_path / "unmounted" / "vllm") == cache_root / "vllm"
