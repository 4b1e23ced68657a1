"""The CLI against the real app on Ray Serve, as a user runs it: one story from an admin's new client to a
chat with its fine-tune (upload in parts, create, watch to the end, deploy, chat, undeploy).

About two minutes on two cores: the tiny model trains while its base model's server starts.
"""

from __future__ import annotations

import json
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli.conftest import RunCli
from tests.integration.test_jobs import TINY, capitals
from tests.serve_fixtures import ServeApp

pytestmark = pytest.mark.integration
QUESTION = "What is the capital of France?"
SPARK = set("▁▂▃▄▅▆▇█")


def ok(result: object) -> str:
    """Return a finished command's stdout, after checking it exited 0."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def test_upload_create_watch_deploy_and_chat(
    serve_app: ServeApp, run_cli: RunCli, config_file: Path, tmp_path: Path
) -> None:
    assert serve_app.settings.admin_key is not None
    admin = ("--url", serve_app.url, "--admin-key", serve_app.settings.admin_key.get_secret_value())

    # An admin makes a client with its first key; the secret comes back once.
    client = json.loads(ok(run_cli(*admin, "admin", "clients", "create", "cli", "--with-key", "--json")))
    key = client["key"]["secret"]
    clients = json.loads(ok(run_cli(*admin, "admin", "clients", "ls", "--json")))
    assert client["id"] in {c["id"] for c in clients["data"]}

    # login checks the key, then stores URL and key privately; later commands need neither flag.
    wrong = run_cli("--url", serve_app.url, "login", "--api-key", "sk-ms-wrong")
    assert wrong.returncode == 1 and "incorrect or disabled API key" in wrong.stderr
    assert not config_file.exists()
    login = run_cli("--url", serve_app.url, "login", "--api-key", key)
    assert login.returncode == 0 and "logged in" in login.stderr, login.stderr
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert key in config_file.read_text()
    assert "cli" in ok(run_cli("whoami"))

    # A file with an error on line 3: exit 1, the error named by line.
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(capitals(2) + b"{not json\n")
    invalid = run_cli("files", "upload", str(bad))
    assert invalid.returncode == 1 and "line 3" in invalid.stdout, (invalid.stdout, invalid.stderr)

    # The dataset through the Uploads API in three parts (4 KiB each), checked by MD5.
    data = tmp_path / "capitals.jsonl"
    data.write_bytes(capitals())
    uploaded = json.loads(ok(run_cli("files", "upload", str(data), "--part-size", "4KiB", "--json")))
    assert uploaded["bytes"] == data.stat().st_size and uploaded["status"] == "processed", uploaded
    files = json.loads(ok(run_cli("files", "ls", "--json")))
    assert uploaded["id"] in {f["id"] for f in files["data"]}
    bad_id = next(f["id"] for f in files["data"] if f["filename"] == "bad.jsonl")
    assert json.loads(ok(run_cli("files", "rm", bad_id, "--json")))["deleted"] is True

    # A job cancelled at once: watch ends with it, exit 1.
    doomed = json.loads(ok(run_cli("jobs", "create", uploaded["id"], "--model", TINY, "--json")))
    assert json.loads(ok(run_cli("jobs", "cancel", doomed["id"], "--json")))["status"] == "cancelled"
    cancelled = run_cli("jobs", "watch", doomed["id"])
    assert cancelled.returncode == 1 and "cancelled" in cancelled.stderr

    # The real job; the base model's server starts meanwhile.
    job = json.loads(ok(run_cli(
        "jobs", "create", uploaded["id"], "--model", TINY, "--epochs", "4", "--batch-size", "8",
        "--lr-multiplier", "100", "--suffix", "cli", "--json",
    )))  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        base = pool.submit(run_cli, "deploy", TINY, "--json", timeout=600)
        started = time.monotonic()
        watched = run_cli("jobs", "watch", job["id"], timeout=600)
        out = ok(watched)
        assert f"{job['id']} succeeded" in out and "Fine-tuning job started" in out, out
        curve = next(line for line in out.splitlines() if line.startswith("loss curve "))
        assert len(set(curve.removeprefix("loss curve ")) & SPARK) > 2, curve  # a loss that moved
        watch_s = time.monotonic() - started
        assert json.loads(ok(base.result()))["status"] == "ready"
    shown = json.loads(ok(run_cli("jobs", "show", job["id"], "--json")))
    tuned = shown["fine_tuned_model"]
    assert shown["status"] == "succeeded" and tuned.startswith(f"ft:{TINY}:")
    assert job["id"] in {j["id"] for j in json.loads(ok(run_cli("jobs", "ls", "--json")))["data"]}

    # The LoRA fine-tune attaches to its running base; then it answers, streamed or as JSON, and in the REPL.
    adapter = json.loads(ok(run_cli("deploy", tuned, "--json")))
    assert adapter["status"] == "ready" and adapter["placement"] == "adapter", adapter
    sampling = ("--max-tokens", "12", "--temperature", "0")
    streamed = ok(run_cli("chat", tuned, "--message", QUESTION, *sampling))
    assert streamed.strip(), streamed
    whole = json.loads(ok(run_cli("chat", tuned, "--message", QUESTION, *sampling, "--json")))
    assert whole["choices"][0]["message"]["content"] == streamed.removesuffix("\n")
    repl = ok(run_cli("chat", tuned, *sampling, stdin=f"{QUESTION}\n/exit\nnever sent\n"))
    assert repl == streamed

    # Errors are the API's message with exit 1.
    missing = run_cli("jobs", "show", "ftjob-nope")
    assert missing.returncode == 1 and "no fine-tuning job 'ftjob-nope'" in missing.stderr
    deployments = json.loads(ok(run_cli("deployments", "ls", "--json")))
    assert {d["model"] for d in deployments["data"]} >= {TINY, tuned}
    # The adapter, then its base: later tests in the session expect the tiny base not deployed.
    for model in (tuned, TINY):
        assert json.loads(ok(run_cli("undeploy", model, "--json")))["status"] in ("deleting", "deleted")
        for _ in range(600):
            listed = json.loads(ok(run_cli("deployments", "ls", "--json")))["data"]
            if model not in {d["model"] for d in listed}:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"{model} still deployed: {listed}")
    print(f"watch + base deploy: {watch_s:.0f} s\n{out}\nanswer: {streamed!r}")
