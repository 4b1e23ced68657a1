"""Take-away models: a LoRA fine-tune downloaded (adapter, and merged) and loaded by transformers and vLLM.

On the session's Ray cluster and Serve app: train a tiny LoRA job, download `GET /v1/models/{id}/content`
(the adapter as it lies in the job's directory) and `?format=merged` (merged in a Ray task, cached),
then load both with transformers (the merged logits equal the base + adapter from the job's directory)
and the merged one with vLLM (a few greedy tokens, in a subprocess: vLLM's engine owns its process).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import httpx
import pytest

from studio.serving.engine import engine_env, prepare_scratch
from tests.helpers import new_tenant, wait_for
from tests.integration.conftest import ServeApp
from tests.integration.test_jobs import TINY

pytestmark = pytest.mark.integration
VLLM_TIMEOUT_S = 600


def download(http: httpx.Client, path: str, headers: dict[str, str], dest: Path) -> Path:
    """Stream a download to `dest`'s parent, unpack it there; return the one folder it held."""
    with http.stream("GET", path, headers=headers, timeout=600) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-tar"
        assert "filename*=UTF-8''" in response.headers["content-disposition"]
        data = b"".join(response.iter_bytes())
    assert len(data) == int(response.headers["content-length"])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
        archive.extractall(dest, filter="data")
    roots = {name.split("/")[0] for name in names}
    assert len(roots) == 1, roots
    return dest / roots.pop()


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_download_a_lora_fine_tune_and_run_it_elsewhere(
    serve_app: ServeApp, http: httpx.Client, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.training.models import resolve_base_model

    tenant = new_tenant(serve_app, http, "take-away")
    hyperparameters = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 100}
    job = tenant.sdk.fine_tuning.jobs.create(
        model=TINY,
        training_file=tenant.file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        suffix="take-away",
    )
    done = wait_for(
        http, job.id, tenant.headers, lambda j: j["status"] in ("succeeded", "failed", "cancelled")
    )
    assert done["status"] == "succeeded", done
    tuned, final = done["fine_tuned_model"], Path(done["output_model_path"])
    content = f"/v1/models/{tuned}/content"

    stranger = new_tenant(serve_app, http, "stranger-dl")
    assert http.get(content, headers=stranger.headers).status_code == 404
    assert http.get(f"/v1/models/{TINY}/content", headers=tenant.headers).status_code == 404

    adapter = download(http, content, tenant.headers, tmp_path / "adapter")
    assert digests(adapter) == digests(final)  # the job's adapter directory, byte for byte
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    merged = download(http, f"{content}?format=merged", tenant.headers, tmp_path / "merged")
    assert merged.name.endswith("-merged") and (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    again = download(http, f"{content}?format=merged", tenant.headers, tmp_path / "again")
    assert digests(again) == digests(merged)  # cached: the same files, not a second merge

    # transformers: the merged model computes what the base + the job's own adapter computes.
    base_dir = resolve_base_model(TINY, serve_app.settings.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("What is the capital of France?", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), final)(
            ids
        ).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        from_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter)
        base_logits = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_adapter(ids).logits, expected)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter changed something

    # vLLM loads the merged directory as any model and generates.
    scratch = tmp_path / "vllm"
    prepare_scratch(str(scratch))
    script = textwrap.dedent(f"""
        from vllm import LLM, SamplingParams
        llm = LLM(model={str(merged)!r}, dtype="float32", enforce_eager=True, max_model_len=256,
                  kv_cache_memory_bytes=64 << 20, distributed_executor_backend="uni")
        params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
        out = llm.generate(["What is the capital of France?"], params)
        print("TOKENS", list(out[0].outputs[0].token_ids))
    """)
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **engine_env(str(scratch))},
        capture_output=True,
        text=True,
        timeout=VLLM_TIMEOUT_S,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("TOKENS ")]
    assert run.returncode == 0 and lines, run.stderr[-4000:]
    # ignore_eos: a random tiny fine-tune may well answer with EOS first; four tokens show it generates.
    assert len(json.loads(lines[-1].removeprefix("TOKENS "))) == 4
