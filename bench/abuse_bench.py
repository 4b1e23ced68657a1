"""Abuse figures: what a stranger's huge body and a greedy tenant's open streams cost everyone else.

    .venv/bin/python -m bench.abuse_bench [--gigabytes 1] [--samples 60]

Starts Mini Studio on embedded defaults on a private Ray cluster (what `serve_config.yaml` ships: the
entry point users run) and reports, from one run:
1. A client with no key sends a 1 GB body to `POST /admin/clients` (`application/octet-stream`), once with
   its length declared and once chunked (no length): how many bytes had been sent when the answer came
   (goal: answered before 1% of it), the answer, and the peak RSS growth of every Mini Studio process while
   it was sent (goal: < 100 MB each, Serve's proxy and the ingress replicas included).
2. A well-behaved tenant's `GET /v1/models` p50 / p99 (sequential requests) when the studio is idle, and
   while another tenant holds its full share of open job event streams
   (`STUDIO_API__MAX_OPEN_REQUESTS_PER_CLIENT`); goal: p50 within 2x of idle. The greedy tenant's next
   stream is refused 429.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import ADMIN_KEY, RunningStudio, running_studio
from bench.upload_bench import TreeRss

CHUNK = 1 << 20
ROWS = "".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}."}]}
    )
    + "\n"
    for i in range(16)
).encode()


def huge_body(url: str, total: int, *, chunked: bool) -> dict[str, Any]:
    """Send `total` bytes to `/admin/clients` without a key; return when the answer came and what it was."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (
        f"POST /admin/clients HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/octet-stream\r\n"
    )
    sock.sendall(f"{head}{length}\r\n\r\n".encode())
    block = b"x" * CHUNK
    sent = 0
    answer = b""
    started = time.perf_counter()
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = sock.recv(4096)
                break
            data = f"{CHUNK:x}\r\n".encode() + block + b"\r\n" if chunked else block
            sock.sendall(data)
            sent += CHUNK
        if not answer:
            sock.settimeout(30)
            answer = sock.recv(4096)
    except OSError as exc:  # the server closed the connection while the body was still coming
        answer = answer or f"connection closed: {exc}".encode()
    finally:
        sock.close()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return {"sent": sent, "seconds": time.perf_counter() - started, "answer": status}


def tenant(http: httpx.Client, name: str, **limits: Any) -> dict[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client = http.post(
        "/admin/clients",
        headers=admin,
        json={"name": name, "limits": {"requests_per_minute": 100_000, **limits}},
    ).json()
    secret = http.post(f"/admin/clients/{client['id']}/keys", headers=admin).json()["secret"]
    return {"Authorization": f"Bearer {secret}"}


def queued_job(http: httpx.Client, headers: dict[str, str]) -> str:
    """Upload a small file and create a job that stays queued (the bench's studio launches through the Jobs
    API only, and its cluster has no dashboard: the job waits, and its event stream stays open)."""
    file_id = http.post(
        "/v1/files", headers=headers, files={"file": ("t.jsonl", ROWS)}, data={"purpose": "fine-tune"}
    ).json()["id"]
    for _ in range(120):
        if http.get(f"/v1/files/{file_id}", headers=headers).json()["status"] == "processed":
            break
        time.sleep(0.5)
    body = {"model": "mini-studio/tiny-llama", "training_file": file_id}
    job = http.post("/v1/fine_tuning/jobs", headers=headers, json=body)
    assert job.status_code == 200, job.text
    return str(job.json()["id"])


def latencies(http: httpx.Client, headers: dict[str, str], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        assert http.get("/v1/models", headers=headers).status_code == 200
        out.append((time.perf_counter() - started) * 1000)
    return out


def hold_streams(
    url: str, headers: dict[str, str], job_id: str, count: int
) -> tuple[list[int], threading.Event]:
    """Open `count` event streams of the job and keep them open until the returned event is set."""
    statuses: list[int] = []
    opened = threading.Barrier(count + 1)
    release = threading.Event()

    def hold() -> None:
        with (
            httpx.Client(base_url=url, timeout=None) as client,
            client.stream(
                "GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}, headers=headers
            ) as response,
        ):
            statuses.append(response.status_code)
            opened.wait()
            release.wait()

    for _ in range(count):
        threading.Thread(target=hold, daemon=True).start()
    opened.wait(timeout=120)
    return statuses, release


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values):6.1f} ms, p99 {cuts[98]:6.1f} ms"


def streams_figures(studio: RunningStudio, samples: int) -> list[str]:
    with httpx.Client(base_url=studio.url, timeout=60) as http:
        polite = tenant(http, "polite")
        greedy = tenant(http, "greedy")
        job_id = queued_job(http, greedy)
        latencies(http, polite, 10)  # warm the caches of both replicas
        idle = latencies(http, polite, samples)
        share = studio.settings.api.max_open_requests_per_client * studio.settings.serving.ingress_replicas
        statuses, release = hold_streams(studio.url, greedy, job_id, share)
        try:
            busy = latencies(http, polite, samples)
            with http.stream(
                "GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}, headers=greedy
            ) as extra:
                refused = (
                    f"{extra.status_code} {extra.read().decode()[:120] if extra.status_code != 200 else ''}"
                )
        finally:
            release.set()
    held = sum(1 for s in statuses if s == 200)
    ratio = statistics.median(busy) / statistics.median(idle)
    return [
        f"GET /v1/models, idle:                            {quantiles(idle)}",
        f"GET /v1/models, another tenant holding {held:>3} streams: {quantiles(busy)}",
        f"  p50 ratio busy / idle: {ratio:.2f}x (goal <= 2x); the greedy tenant's next stream: {refused}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    total = int(args.gigabytes * 1e9) // CHUNK * CHUNK
    lines = []
    with running_studio(training={"launcher": "jobs_api"}) as studio:
        for chunked in (False, True):
            with TreeRss() as rss:
                result = huge_body(studio.url, total, chunked=chunked)
            growth = rss.growth_mb()
            # The processes a body could fill (the entry point and the ingress), and the worst of the rest.
            entry = {k: v for k, v in growth.items() if any(n in k for n in ("Proxy", "Ingress", "haproxy"))}
            rest = max((v for k, v in growth.items() if k not in entry), default=0.0)
            worst = {**entry, "any other process": rest}
            how = "chunked, no length" if chunked else "length declared"
            lines.append(
                f"{args.gigabytes:g} GB body without a key ({how}): answered '{result['answer']}' after "
                f"{result['sent'] / 1e6:.0f} MB sent, socket buffers included "
                f"({100 * result['sent'] / total:.2f}% of it, goal < 1%), "
                f"{result['seconds'] * 1000:.0f} ms"
            )
            lines.append("  peak RSS growth: " + ", ".join(f"{k} {v:.1f} MB" for k, v in worst.items()))
        lines += streams_figures(studio, args.samples)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
