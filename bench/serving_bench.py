"""Serving figures: the ingress's overhead on inference, and attaching a LoRA adapter vs a new deployment.

    .venv/bin/python -m bench.serving_bench [--requests 32] [--max-tokens 32] [--concurrency 1,32]
        [--stream-batch-ms 20]

Starts a private Ray cluster (2 CPUs) running Mini Studio on embedded defaults, deploys the tiny base
model and reports:
1. Ingress overhead. The same completion requests (`/v1/completions`, a fixed prompt, `max_tokens`
   tokens forced with `ignore_eos`), streaming and not, at each concurrency, two ways in one run,
   alternating batches: (a) straight to the model server through its deployment handle from this
   process (no HTTP); (b) through the ingress as clients send them: HTTP to Serve's proxy, the ingress
   (auth, rate limit, routing table) and its handle call. Time to first token (TTFT) is the time to
   the first event carrying text (streaming) or the whole response (not streaming); p50 / p99 over the
   requests, and tokens/s = completion tokens of a batch / its wall time. Goal: (b) - (a) <= 5 ms TTFT
   at p50, (b) >= 0.95 x (a) tokens/s.
2. Adapter attach: a LoRA fine-tune (trained here on 32 rows) deployed onto the running base -> its
   first token, beside the base's own deployment -> first token (a new model server) from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.common import RunningStudio, running_studio

TINY = "mini-studio/tiny-llama"
PROMPT = "The capital of France is"
ROWS = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"Number {i}."}]}
    for i in range(32)
]
Timed = tuple[float, int]  # (seconds to first token, completion tokens)


def body(max_tokens: int, *, stream: bool) -> dict[str, Any]:
    return {
        "model": TINY, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
        "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {}),
    }  # fmt: skip


def first_text(events: list[str]) -> bool:
    """Return True when one of the SSE events carries generated text."""
    for event in events:
        if event.startswith("data: {"):
            choices = json.loads(event[6:]).get("choices") or []
            if any(c.get("text") for c in choices):
                return True
    return False


def usage_of(event: str) -> int | None:
    if event.startswith("data: {"):
        usage = json.loads(event[6:]).get("usage")
        if usage:
            return int(usage["completion_tokens"])
    return None


async def via_handle(handle: Any, request: dict[str, Any]) -> Timed:
    started = time.perf_counter()
    if not request["stream"]:
        response = await handle.options(stream=False).complete.remote("completion", request)
        return time.perf_counter() - started, response["usage"]["completion_tokens"]
    ttft, tokens = 0.0, 0
    async for batch in handle.options(stream=True).stream.remote("completion", request):
        if not ttft and first_text(batch):
            ttft = time.perf_counter() - started
        tokens = next((n for e in batch if (n := usage_of(e)) is not None), tokens)
    return ttft, tokens


async def via_ingress(http: httpx.AsyncClient, headers: dict[str, str], request: dict[str, Any]) -> Timed:
    started = time.perf_counter()
    if not request["stream"]:
        response = await http.post("/v1/completions", json=request, headers=headers)
        response.raise_for_status()
        return time.perf_counter() - started, response.json()["usage"]["completion_tokens"]
    ttft, tokens = 0.0, 0
    async with http.stream("POST", "/v1/completions", json=request, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            event = line + "\n\n"
            if not ttft and first_text([event]):
                ttft = time.perf_counter() - started
            tokens = usage_of(event) or tokens
    return ttft, tokens


async def batch(
    call: Callable[[], Awaitable[Timed]], requests: int, concurrency: int
) -> tuple[list[float], float]:
    """Run `requests` calls, `concurrency` at a time; return their TTFTs and the batch's tokens/s."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Timed:
        async with gate:
            return await call()

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(requests)))
    wall = time.perf_counter() - started
    return [ttft for ttft, _ in results], sum(tokens for _, tokens in results) / wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def overhead(studio: RunningStudio, args: argparse.Namespace, app_name: str) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=studio.url, timeout=300, limits=limits) as http:
        for stream in (False, True):
            request = body(args.max_tokens, stream=stream)
            await via_handle(handle, request)  # warm both paths
            await via_ingress(http, studio.headers, request)
            for concurrency in args.concurrency:
                direct: list[float] = []
                ingress: list[float] = []
                rates: dict[str, list[float]] = {"direct": [], "ingress": []}
                for _ in range(args.rounds):  # alternate, so the machine's drift hits both alike
                    ttfts, rate = await batch(
                        lambda r=request: via_handle(handle, r), args.requests, concurrency
                    )
                    direct += ttfts
                    rates["direct"].append(rate)
                    ttfts, rate = await batch(
                        lambda r=request: via_ingress(http, studio.headers, r), args.requests, concurrency
                    )
                    ingress += ttfts
                    rates["ingress"].append(rate)
                d_rate, i_rate = statistics.median(rates["direct"]), statistics.median(rates["ingress"])
                print(
                    f"{'stream' if stream else 'whole '} c={concurrency:<3} TTFT p50/p99 ms: direct "
                    f"{pct(direct, 0.5):7.1f} / {pct(direct, 0.99):7.1f}, ingress {pct(ingress, 0.5):7.1f} / "
                    f"{pct(ingress, 0.99):7.1f} (+{pct(ingress, 0.5) - pct(direct, 0.5):.1f} ms at p50); "
                    f"tokens/s direct {d_rate:6.0f}, ingress {i_rate:6.0f} ({i_rate / d_rate:.2f}x)",
                    flush=True,
                )


def first_token(http: httpx.Client, headers: dict[str, str], model: str) -> float:
    """Return when (perf_counter) the model's first streamed text token arrived."""
    request = {"model": model, "prompt": PROMPT, "max_tokens": 4, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/completions", json=request, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first_text([line]):
                return time.perf_counter()
    raise RuntimeError(f"{model} streamed no text")


def wait_job(http: httpx.Client, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    while (job := http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json())["status"] not in (
        "succeeded", "failed", "cancelled",
    ):  # fmt: skip
        time.sleep(0.5)
    return job


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--stream-batch-ms", type=float, default=20.0, help="the model servers' setting")
    args = parser.parse_args()
    serving = {"stream_batch_ms": args.stream_batch_ms}
    with (
        running_studio(dashboard=True, serving=serving) as studio,
        httpx.Client(base_url=studio.url, timeout=600) as http,
    ):
        h = studio.headers
        # Fine-tune first, so its Ray job does not share the CPUs with the measurements.
        data = "\n".join(json.dumps(row) for row in ROWS).encode()
        file_id = http.post(
            "/v1/files", headers=h, files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}
        )
        hyper = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 50}
        job = http.post("/v1/fine_tuning/jobs", headers=h, json={
            "model": TINY, "training_file": file_id.json()["id"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }).json()  # fmt: skip
        tuned = wait_job(http, h, job["id"])["fine_tuned_model"]

        started = time.perf_counter()
        base = http.post("/v1/deployments", headers=h, json={"model": TINY}).json()
        new_server_s = first_token(http, h, TINY) - started
        started = time.perf_counter()
        adapter = http.post("/v1/deployments", headers=h, json={"model": tuned})
        adapter.raise_for_status()
        attach_s = first_token(http, h, tuned) - started
        print(
            f"deploy -> first token: new model server {new_server_s:.1f} s, "
            f"LoRA adapter attach {attach_s:.2f} s"
        )
        asyncio.run(overhead(studio, args, base["app_name"]))


if __name__ == "__main__":
    main()
