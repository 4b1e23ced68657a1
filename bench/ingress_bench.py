"""Ingress request rate and latency for each way of running Serve's entry point, beside plain uvicorn.

    .venv/bin/python -m bench.ingress_bench [--seconds 10] [--modes proxy,direct,haproxy]
        [--redis-url redis://...]

For each mode (`tests/serve_modes.py`: Serve's Python proxy; direct ingress, reached on the replica's
own port; HAProxy on the entry port) a child process starts a private Ray cluster running Mini Studio
on embedded defaults, creates a client and key, and drives `GET /v1/me` (authenticated: key lookup,
client config, rate limit) and `GET /healthz` (no database) at concurrency 1
and 32. The first child also runs the same FastAPI app under plain uvicorn on the same database: the
floor no entry point can beat. The load generator shares the machine's cores with the servers (and
the machine may be shared with other work): compare the columns of one run, not the absolute numbers
with another machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.common import ADMIN_KEY, RunningStudio, running_studio
from bench.upload_bench import entry_url
from tests.serve_modes import MODES, mode_env, private_ports
from tests.servers import free_port, port_open, wait_for

PATHS = ("/v1/me", "/healthz")


@dataclass
class Result:
    target: str
    path: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def drive(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float, target: str, path: str
) -> Result:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        for _ in range(20):  # warm up connections and caches
            async with session.get(url + path) as response:
                await response.read()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url + path) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return Result(target, path, concurrency, len(lat), errors, elapsed, statistics.median(lat), p99)


def run_all(url: str, headers: dict[str, str], target: str, seconds: float) -> list[Result]:
    return [
        asyncio.run(drive(url, headers, concurrency=concurrency, seconds=seconds, target=target, path=path))
        for path in PATHS
        for concurrency in (1, 32)
    ]


def plain_uvicorn(studio: RunningStudio, redis_url: str | None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the same FastAPI app under plain uvicorn on the studio's database; return it and its URL."""
    from studio.app.embedded import embedded_mongo_url

    settings = studio.settings
    mongo_url = asyncio.run(embedded_mongo_url(settings))
    port = free_port()
    env = {
        **os.environ,
        "STUDIO_DATA_DIR": str(studio.data_dir),
        "STUDIO_ADMIN_KEY": ADMIN_KEY,
        "STUDIO_STORE__DATABASE": settings.store.database,
        "STUDIO_API__LOG_LEVEL": "WARNING",
        "BENCH_MONGO_URL": mongo_url,
        **({"STUDIO_REDIS__URL": redis_url} if redis_url else {}),
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "bench.plain_app:create"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(argv, env=env)
    wait_for(lambda: port_open(port), timeout_s=60, what="uvicorn")
    return process, f"http://127.0.0.1:{port}"


def one_mode(mode: str, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with running_studio(
        controller_env=private_ports(mode_env(mode)), redis={"url": args.redis_url}
    ) as studio:
        results += run_all(entry_url(mode, studio.url), studio.headers, mode, args.seconds)
        if args.with_uvicorn:
            plain, url = plain_uvicorn(studio, args.redis_url)
            try:
                results += run_all(url, studio.headers, "uvicorn", args.seconds)
            finally:
                plain.terminate()
                plain.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--one-mode", help=argparse.SUPPRESS)
    parser.add_argument("--with-uvicorn", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_mode:  # the child process of one mode
        rows = one_mode(args.one_mode, args)
        Path(args.result).write_text(json.dumps([asdict(result) for result in rows]))
        return
    scratch = Path(tempfile.mkdtemp(prefix="ingress-bench-"))
    results: list[Result] = []
    for index, mode in enumerate(args.modes.split(",")):
        out = scratch / f"{mode}.json"
        argv = [sys.executable, "-m", "bench.ingress_bench", "--one-mode", mode, "--result", str(out)]
        argv += ["--seconds", str(args.seconds), *(["--with-uvicorn"] if index == 0 else [])]
        argv += ["--redis-url", args.redis_url] if args.redis_url else []
        print(f"running {mode} ...", flush=True)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        results += [Result(**row) for row in json.loads(out.read_text())]
    targets = list(dict.fromkeys(result.target for result in results))
    print(
        f"\n{args.seconds:g} s per cell, redis={'yes' if args.redis_url else 'no'}, embedded MongoDB, "
        f"{os.cpu_count()} cores shared with the load generator; req/s (p50 / p99 ms), errors if any"
    )
    print(f"{'':<16}" + "".join(f"{target:>26}" for target in targets))
    for path in PATHS:
        for concurrency in (1, 32):
            cells = []
            for target in targets:
                (found,) = [
                    r for r in results if (r.target, r.path, r.concurrency) == (target, path, concurrency)
                ]
                errors = f" E{found.errors}" if found.errors else ""
                cells.append(f"{found.rate:7.0f} ({found.p50_ms:5.1f} / {found.p99_ms:5.1f}){errors}")
            print(f"{path + ' c=' + str(concurrency):<16}" + "".join(f"{cell:>26}" for cell in cells))


if __name__ == "__main__":
    main()
