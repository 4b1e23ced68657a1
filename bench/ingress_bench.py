"""Ingress request rate and latency through Serve's HTTP proxy, beside plain uvicorn, in one run.

    .venv/bin/python -m bench.ingress_bench [--seconds 10] [--redis-url redis://...]

Starts a private Ray cluster running Mini Studio on embedded defaults, creates a client and key, and
drives `GET /v1/me` (authenticated: key lookup, client config, rate limit) at concurrency 1 and 32,
first through Serve's proxy, then against the same FastAPI app under plain uvicorn on the same database.
The load generator shares the machine's cores with the servers: compare the two columns, not the
absolute numbers with another machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp

from bench.common import ADMIN_KEY, running_studio
from tests.servers import free_port, port_open, wait_for


@dataclass
class Result:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        rate = self.requests / self.seconds
        return (
            f"{self.target:<8} c={self.concurrency:<3} {rate:8.1f} req/s   p50 {p50:7.2f} ms   "
            f"p99 {p99:7.2f} ms   errors {self.errors}"
        )


async def drive(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float, target: str
) -> Result:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        for _ in range(20):  # warm up connections and caches
            async with session.get(url) as response:
                await response.read()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(target, concurrency, len(latencies), errors, elapsed, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    from studio.app.embedded import embedded_mongo_url

    with running_studio(redis={"url": args.redis_url}) as studio:
        settings = studio.settings
        mongo_url = asyncio.run(embedded_mongo_url(settings))
        plain_port = free_port()
        env = {
            **os.environ,
            "STUDIO_DATA_DIR": str(studio.data_dir),
            "STUDIO_ADMIN_KEY": ADMIN_KEY,
            "STUDIO_STORE__DATABASE": settings.store.database,
            "STUDIO_API__LOG_LEVEL": "WARNING",
            "BENCH_MONGO_URL": mongo_url,
        }
        if args.redis_url:
            env["STUDIO_REDIS__URL"] = args.redis_url
        plain = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench.plain_app:create",
                "--host",
                "127.0.0.1",
                "--port",
                str(plain_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
        )
        try:
            wait_for(lambda: port_open(plain_port), timeout_s=60, what="uvicorn")
            print(
                f"GET /v1/me, {args.seconds:g} s per row, redis={'yes' if args.redis_url else 'no'}, "
                f"embedded MongoDB, {os.cpu_count()} cores shared with the load generator"
            )
            for concurrency in (1, 32):
                for target, base in (("serve", studio.url), ("uvicorn", f"http://127.0.0.1:{plain_port}")):
                    result = asyncio.run(
                        drive(
                            f"{base}/v1/me",
                            studio.headers,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            target=target,
                        )
                    )
                    print(result.row(), flush=True)
        finally:
            plain.terminate()
            plain.wait(timeout=30)


if __name__ == "__main__":
    main()
