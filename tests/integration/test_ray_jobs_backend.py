"""The training entrypoint as a real Ray job through the Jobs API: it trains the tiny model, or stops."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from studio.backends.ray_job_records import RayJobRecords
from studio.backends.ray_jobs import RayJobLauncher
from studio.domain.ids import new_id
from studio.errors import NotFound, Unavailable
from studio.ports import ActiveRun
from tests.helpers import events_of, job_config, wait_until_done
from tests.servers import free_port

pytestmark = pytest.mark.integration


async def test_training_runs_as_a_ray_job(ray_cluster: str, tmp_path: Path) -> None:
    launcher = RayJobLauncher(ray_cluster)
    submitted = await launcher.submit(
        submission_id=new_id("ftjob"),
        config_path=str(job_config(tmp_path, epochs=2)),
        num_cpus=1,
        num_gpus=0,
        metadata={"studio_job_id": "ftjob-test", "client_id": "client-test"},
    )
    status = await wait_until_done(launcher, submitted)
    logs = await launcher.logs(submitted)
    assert status.state == "succeeded", logs[-2000:]
    # Without the dashboard, the cluster's own records give the same end and the same log.
    records = RayJobRecords(timeout_s=10)
    assert (await records.status(submitted)).state == "succeeded"
    assert await records.logs(submitted) == logs and await records.has_run(submitted)
    assert await records.read_log(submitted, offset=10, max_bytes=20) == logs.encode()[10:30]
    events = events_of(logs)
    assert [event for event in events if event["type"] == "checkpoint"]
    (result,) = [event for event in events if event["type"] == "result"]
    assert result["steps"] == 8 and await asyncio.to_thread(Path(result["final_path"]).is_dir)


async def test_stop_ends_a_running_job(ray_cluster: str, tmp_path: Path) -> None:
    launcher = RayJobLauncher(ray_cluster)
    submitted = await launcher.submit(
        submission_id=new_id("ftjob"),
        config_path=str(job_config(tmp_path, epochs=100)),
        num_cpus=1,
        num_gpus=0,
        metadata={"studio_job_id": "ftjob-stop"},
    )
    for _ in range(300):
        if (await launcher.status(submitted)).state == "running":
            break
        await asyncio.sleep(0.2)
    records = RayJobRecords(timeout_s=10)
    assert (await records.status(submitted)).state == "running"
    # Listed for the tracker's comparison with the store, by this installation only.
    assert ActiveRun(launch_id=submitted, job_id="ftjob-stop") in await launcher.active_runs()
    assert not await RayJobLauncher(ray_cluster, namespace="another-studio").active_runs()
    assert await records.stop(submitted)  # through its supervisor actor, as the Jobs API does
    assert (await wait_until_done(launcher, submitted)).state == "stopped"
    assert submitted not in [run.launch_id for run in await launcher.active_runs()]
    assert (await records.status(submitted)).state == "stopped" and not await records.stop(submitted)
    with pytest.raises(NotFound):
        await launcher.status("raysubmit_does_not_exist")
    with pytest.raises(NotFound):
        await records.status("raysubmit_does_not_exist")


async def test_unreachable_jobs_api_is_unavailable() -> None:
    launcher = RayJobLauncher(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(Unavailable):
        await launcher.status("anything")


async def test_a_jobs_api_that_refuses_the_token_is_unavailable_naming_it() -> None:
    """A dashboard with Ray's token authentication answers 401 to a caller without the token."""

    class TokenRequired(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"Unauthorized: Missing authentication token"
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenRequired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        launcher = RayJobLauncher(f"http://127.0.0.1:{server.server_port}", timeout_s=5)
        with pytest.raises(Unavailable, match="RAY_AUTH_MODE=token"):
            await launcher.status("anything")
    finally:
        server.shutdown()
