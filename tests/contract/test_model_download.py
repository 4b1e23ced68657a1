"""`GET /v1/models/{fine-tune}/content`: the job's final directory as a streamed tar, to its owner only.

In-process (tests/contract's app and the real tracker on the MongoDB-protocol server); the weights are
bytes the test writes. Loading a real download with transformers and vLLM is
tests/integration/test_model_download.py.
"""

from __future__ import annotations

import io
import os
import tarfile
from urllib.parse import quote

from tests.conftest import S3Endpoint
from tests.contract.conftest import Tenant
from tests.contract.strict import ERROR_OMITTED, ErrorBody, assert_openai_shape
from tests.contract.test_job_results import Tracker, log_of, succeeded_job, tracker

__all__ = ["tracker"]  # fixture
LONG = "nested/" + "a-very-long-file-name-" * 6 + ".bin"  # > 100 characters: a PAX header


async def test_the_owner_downloads_the_adapter_as_a_tar(tenant: Tenant, tracker: Tracker) -> None:
    done = await succeeded_job(tenant, tracker)
    final = tracker.settings.jobs_dir / done["id"] / "final"
    written = {
        "adapter_config.json": b"{}",
        "adapter_model.safetensors": os.urandom(3 * 1024 * 1024 + 17),  # over a chunk, not block-aligned
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        LONG: b"x" * 513,
        "empty.txt": b"",
    }
    for name, data in written.items():
        (final / name).parent.mkdir(parents=True, exist_ok=True)
        (final / name).write_bytes(data)
    tuned = done["fine_tuned_model"]

    answer = await tenant.api.get(f"/v1/models/{tuned}/content", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-tar"
    assert int(answer.headers["content-length"]) == len(answer.content)
    stem = tuned.replace(":", "-").replace("/", "-")
    disposition = answer.headers["content-disposition"]
    assert disposition == f"attachment; filename=\"{stem}.tar\"; filename*=UTF-8''{quote(stem)}.tar"
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert members == {f"{stem}/{name}": data for name, data in written.items()}
    same = await tenant.api.get(f"/v1/models/{tuned}/content?format=adapter", headers=tenant.headers)
    assert same.content == answer.content

    # Another client, a base model, an unknown name: not found, in OpenAI's error shape.
    _, stranger = await new_tenant_headers(tenant)
    for path, headers in (
        (f"/v1/models/{tuned}/content", stranger),
        ("/v1/models/mini-studio/tiny-llama/content", tenant.headers),
        (f"/v1/models/{tuned}x/content", tenant.headers),
    ):
        missing = await tenant.api.get(path, headers=headers)
        assert missing.status_code == 404, missing.text
        assert_openai_shape(missing.json(), ErrorBody, omitted=ERROR_OMITTED)
        assert missing.json()["error"]["code"] == "model_not_found"
    # Merging needs the Ray cluster (none in this process) or a real adapter (not these bytes).
    unmerged = await tenant.api.get(f"/v1/models/{tuned}/content?format=merged", headers=tenant.headers)
    assert unmerged.status_code == 503 and unmerged.headers["retry-after"], unmerged.text
    bad = await tenant.api.get(f"/v1/models/{tuned}/content?format=gguf", headers=tenant.headers)
    assert bad.status_code in (400, 422) and "format" in bad.text

    # Deleted: gone from the disk and from downloads.
    assert (await tenant.api.delete(f"/v1/models/{tuned}", headers=tenant.headers)).status_code == 200
    gone = await tenant.api.get(f"/v1/models/{tuned}/content", headers=tenant.headers)
    assert gone.status_code == 404


async def new_tenant_headers(tenant: Tenant) -> tuple[str, dict[str, str]]:
    from tests.api.conftest import new_client

    return await new_client(tenant.api, name="stranger")


async def test_a_model_trained_on_a_node_of_its_own_downloads_from_its_s3_copy(
    tenant: Tenant, tracker: Tracker, s3_endpoint: S3Endpoint
) -> None:
    """No shared file system: the run left its model on its node and in S3 (`final_uri`); the first
    download copies it to the data directory (whole), later ones read that copy."""
    file = await tenant.upload()
    job_id = str((await tenant.create_job(file["id"], suffix="remote"))["id"])
    client_id = (await tenant.api.get("/v1/me", headers=tenant.headers)).json()["id"]
    prefix = f"{client_id}/jobs/{job_id}/final"
    written = {"adapter_config.json": b"{}", "adapter_model.safetensors": os.urandom(70_000), LONG: b"y"}
    elsewhere = "/nonexistent/node-2-cache/jobs/final"  # the run's node, not this one
    uri = s3_endpoint.put_folder(prefix, written)
    result = {"type": "result", "final_path": elsewhere, "final_uri": uri, "trained_tokens": 9}
    await tracker.run_to_end(job_id, log_of(result))
    done = (await tenant.api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)).json()
    assert done["status"] == "succeeded" and done["output_model_uri"] == uri, done
    local = tracker.settings.jobs_dir / job_id / "final"
    assert not local.exists()

    tuned = done["fine_tuned_model"]
    for _ in range(2):  # the copy, then the copy on disk
        answer = await tenant.api.get(f"/v1/models/{tuned}/content", headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        stem = tuned.replace(":", "-").replace("/", "-")
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert members == {f"{stem}/{name}": data for name, data in written.items()}
        assert sorted(p.name for p in local.parent.iterdir() if p.name.startswith(".tmp-")) == []
    assert (local / "adapter_model.safetensors").read_bytes() == written["adapter_model.safetensors"]

    # Gone from S3 as well (and not on disk): a clear 404, not a 500.
    other = await tenant.create_job(file["id"], suffix="lost")
    lost_uri = f"s3://{s3_endpoint.bucket}/{client_id}/jobs/{other['id']}/final"
    lost = {"type": "result", "final_path": elsewhere, "final_uri": lost_uri, "trained_tokens": 9}
    tracker.runner.wake(client_id)  # what the ingress's create does (this app's tracker is never woken)
    await tracker.run_to_end(str(other["id"]), log_of(lost))
    lost_model = (await tenant.api.get(f"/v1/fine_tuning/jobs/{other['id']}", headers=tenant.headers)).json()
    missing = await tenant.api.get(
        f"/v1/models/{lost_model['fine_tuned_model']}/content", headers=tenant.headers
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_files_missing", (
        missing.text
    )
