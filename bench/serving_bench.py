"""Serving figures, side by side from one run: Mini Studio against plain `vllm serve`, the ingress against
a direct handle, and adapter attach against a new deployment.

    .venv/bin/python -m bench.serving_bench [--requests 32] [--max-tokens 32] [--concurrency 1,32]
        [--repeats 3] [--stream-batch-ms 20] [--no-vllm]

Starts a private Ray cluster (2 CPUs) running Mini Studio on embedded defaults, fine-tunes a LoRA adapter
of the tiny model (32 rows), deploys the base and attaches the adapter, then starts two `vllm serve`
processes of this venv with the model server's own engine settings (read from its replica: dtype,
max_model_len, max_num_seqs, max_num_batched_tokens, enforce_eager, KV cache bytes, the "uni" executor and
the replica's VLLM_*/OMP_* environment): one plain, one with `--enable-lora` holding the same adapter.
Both keep `vllm serve`'s default engine statistics (its Prometheus metrics), as a user running it gets
and as the model server keeps them (as Ray metrics); no access log on either side.
Every request: `/v1/completions`, a fixed prompt, `max_tokens` tokens forced (`ignore_eos`), greedy.

For each of streamed / not streamed and each concurrency, the compared sides take turns (the order
flips every repeat, so the machine's drift hits all alike), `--requests` requests per side and repeat:
1. base model: Mini Studio (HTTP through Serve's proxy and the ingress) vs `vllm serve` plain, and the
   base model on the `--enable-lora` server (`lora_request=None` there; shown for reference: on vLLM's
   CPU kernels that row takes the last adapter slot's weights when it shares a batch with adapters);
2. the LoRA fine-tune: Mini Studio vs `vllm serve --enable-lora` with the same adapter;
3. the ingress vs a direct deployment handle to the model server (no HTTP) on the base model;
4. then the base is undeployed and deployed again without adapters (`engine.max_adapters` 0: its engine
   runs without LoRA), and compared with plain `vllm serve` once more ("base, no LoRA").
Under each line, each side's CPU per request (milliseconds, summed over the processes the bench started:
its private Ray cluster and the `vllm serve` processes) and its busiest processes, so what an extra hop
costs is seen where it is spent (`bench/process_cpu.py`).
Figures: tokens/s = completion tokens of a batch / its wall time, median over repeats [min-max], and
time to first token (TTFT: the first event carrying text, or the whole response when not streamed)
p50 / p99 over all requests. Goals (issue 13): Mini Studio >= 0.9x `vllm serve` for base and LoRA;
ingress TTFT p50 within 5 ms of the handle and >= 0.95x its tokens/s at c=32. Timings on a shared
machine are noisy: read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import httpx

from bench import process_cpu
from bench.common import RunningStudio, running_studio, vllm_serve

TINY = "mini-studio/tiny-llama"
TUNED_ALIAS = "tuned"  # the adapter's name on the `--enable-lora` server
PROMPT = "The capital of France is"
ROWS = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"Number {i}."}]}
    for i in range(32)
]
Timed = tuple[float, int]  # (seconds to first token, completion tokens)
Call = Callable[[dict[str, Any]], Awaitable[Timed]]  # one request body -> its timing


def body(model: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    return {
        "model": model, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
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


def via_handle(handle: Any) -> Call:
    async def call(request: dict[str, Any]) -> Timed:
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

    return call


def via_http(http: httpx.AsyncClient, headers: dict[str, str], model: str | None = None) -> Call:
    """Return a call posting to `http`'s server, naming `model` in the body when given."""

    async def call(request: dict[str, Any]) -> Timed:
        request = {**request, "model": model} if model else request
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

    return call


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


async def compare(
    sides: list[tuple[str, Call]], request: dict[str, Any], args: argparse.Namespace, concurrency: int
) -> tuple[str, dict[str, tuple[float, float, float, float, float]]]:
    """Run the sides in turns; return where their CPU went (a line) and per side (median tokens/s, min,
    max, TTFT p50 ms, TTFT p99 ms)."""
    rates: dict[str, list[float]] = {name: [] for name, _ in sides}
    ttfts: dict[str, list[float]] = {name: [] for name, _ in sides}
    cpu: dict[str, Counter[str]] = {name: Counter() for name, _ in sides}
    for repeat in range(args.repeats):
        for name, call in sides if repeat % 2 == 0 else sides[::-1]:
            before = await asyncio.to_thread(process_cpu.snapshot)
            times, rate = await batch(lambda c=call: c(request), args.requests, concurrency)
            cpu[name].update(process_cpu.spent(before, await asyncio.to_thread(process_cpu.snapshot)))
            ttfts[name] += times
            rates[name].append(rate)
    return cpu_line(cpu, args.requests * args.repeats), {
        name: (statistics.median(r), min(r), max(r), pct(ttfts[name], 0.5), pct(ttfts[name], 0.99))
        for name, r in rates.items()
    }


def cpu_line(cpu: dict[str, Counter[str]], requests: int) -> str:
    """Return where each side's CPU went: ms per request of its busiest processes (the bench's tree)."""
    parts = []
    for name, spent in cpu.items():
        busiest = [
            f"{process_cpu.short(label)} {seconds * 1000 / requests:.1f}"
            for label, seconds in spent.most_common(4)
            if seconds * 1000 / requests >= 0.1
        ]
        total = sum(spent.values()) * 1000 / requests
        parts.append(f"{name} {total:.1f} ({', '.join(busiest)})")
    return "  CPU ms per request: " + " | ".join(parts)


def report(label: str, figures: dict[str, tuple[float, float, float, float, float]]) -> str:
    """Return one printed line: each side's figures, then the first side's ratio to each other side."""
    parts = [
        f"{name} {rate:6.0f} [{low:.0f}-{high:.0f}] tok/s, TTFT p50/p99 {p50:.1f}/{p99:.1f} ms"
        for name, (rate, low, high, p50, p99) in figures.items()
    ]
    first, *others = figures
    ratios = [f"{first}/{other} {figures[first][0] / figures[other][0]:.2f}x" for other in others]
    return f"{label:<22} " + " | ".join(parts) + " -> " + ", ".join(ratios)


async def measure(
    studio: RunningStudio,
    args: argparse.Namespace,
    *,
    app_name: str,
    tuned: str | None,
    plain: str | None,
    lora: str | None,
) -> None:
    """Print the comparisons; `tuned` None: the base was deployed without adapters (its engine without
    LoRA), and only the base is compared (with plain `vllm serve`)."""
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    def client(url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, timeout=300, limits=limits)

    async with (
        client(studio.url) as ingress_http,
        client(plain or studio.url) as plain_http,
        client(lora or studio.url) as lora_http,
    ):
        ingress = via_http(ingress_http, studio.headers)
        if tuned is None:
            sides = [("studio", ingress)] + ([("vllm", via_http(plain_http, {}))] if plain else [])
            comparisons: list[tuple[str, str, list[tuple[str, Call]]]] = [("base, no LoRA", TINY, sides)]
        else:
            comparisons = [
                ("base", TINY, [("studio", ingress)]),
                ("LoRA", tuned, [("studio", ingress)]),
                ("ingress vs handle", TINY, [("ingress", ingress), ("handle", via_handle(handle))]),
            ]
        if tuned is not None and plain and lora:
            comparisons[0][2].extend(
                [("vllm", via_http(plain_http, {})), ("vllm+lora", via_http(lora_http, {}))]
            )
            comparisons[1][2].append(("vllm+lora", via_http(lora_http, {}, TUNED_ALIAS)))
        for stream in (False, True):
            for label, model, sides in comparisons:
                request = body(model, args.max_tokens, stream=stream)
                for _, call in sides:
                    await call(request)  # warm every path
                for concurrency in args.concurrency:
                    cpu, figures = await compare(sides, request, args, concurrency)
                    mode = f"{'stream' if stream else 'whole '} c={concurrency:<3}"
                    print(report(f"{mode} {label}", figures), cpu, sep="\n", flush=True)


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


def vllm_args(settings: dict[str, Any], *, adapter: str | None) -> list[str]:
    """Return `vllm serve` arguments matching the model server's engine `settings` (plain, or with LoRA
    and `adapter` loaded as `TUNED_ALIAS`)."""
    args = [
        "--model", settings["model_source"], "--served-model-name", TINY, "--dtype", settings["dtype"],
        "--max-model-len", str(settings["max_model_len"]), "--max-num-seqs", str(settings["max_num_seqs"]),
        "--max-num-batched-tokens", str(settings["max_num_batched_tokens"]),
        "--kv-cache-memory-bytes", str(settings["kv_cache_memory_bytes"]),
        "--distributed-executor-backend", "uni", "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if settings["enforce_eager"]:
        args.append("--enforce-eager")
    if adapter is not None:
        slots = str(settings["max_loras"])
        args += ["--enable-lora", "--max-loras", slots, "--max-cpu-loras", slots]
        args += [
            "--max-lora-rank",
            str(settings["max_lora_rank"]),
            "--lora-modules",
            f"{TUNED_ALIAS}={adapter}",
        ]
    return args


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per side, repeat and setting")
    parser.add_argument("--repeats", "--rounds", dest="repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--stream-batch-ms", type=float, default=20.0, help="the model servers' setting")
    parser.add_argument("--no-vllm", action="store_true", help="skip the plain `vllm serve` columns")
    args = parser.parse_args()
    serving = {"stream_batch_ms": args.stream_batch_ms}
    with (
        running_studio(dashboard=True, serving=serving) as studio,
        httpx.Client(base_url=studio.url, timeout=600) as http,
        ExitStack() as servers,
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
            f"LoRA adapter attach {attach_s:.2f} s",
            flush=True,
        )
        from ray import serve

        handle = serve.get_deployment_handle("ModelServer", base["app_name"])
        settings = handle.engine_settings.remote().result(timeout_s=60)
        print(
            f"model server: base requests run with {settings['base_requests']}; engine "
            + json.dumps({k: v for k, v in settings.items() if k not in ("adapters", "env", "model_source")}),
            flush=True,
        )
        plain = lora = None
        if not args.no_vllm:
            env = {"VLLM_NO_USAGE_STATS": "1", **settings["env"]}
            logs = studio.data_dir
            plain = servers.enter_context(
                vllm_serve(vllm_args(settings, adapter=None), env=env, log_path=logs / "vllm-plain.log")
            )
            lora = servers.enter_context(
                vllm_serve(
                    vllm_args(settings, adapter=settings["adapters"][tuned]),
                    env=env,
                    log_path=logs / "vllm-lora.log",
                )
            )
            print(f"vllm serve: plain {plain}, --enable-lora {lora} (logs in {logs})", flush=True)
        asyncio.run(measure(studio, args, app_name=base["app_name"], tuned=tuned, plain=plain, lora=lora))

        # The same base deployed without adapters: its engine runs without LoRA, like plain `vllm serve`.
        for deployment in (adapter.json(), base):
            http.delete(f"/v1/deployments/{deployment['id']}", headers=h).raise_for_status()
        started = time.perf_counter()
        while True:
            plain_base = http.post(
                "/v1/deployments", headers=h, json={"model": TINY, "engine": {"max_adapters": 0}}
            )
            # 409 while the previous server is still going away
            if plain_base.status_code != 409 or time.perf_counter() - started > 300:
                break
            time.sleep(1)
        plain_base.raise_for_status()
        print(f"base deployed without adapters: first token {first_token(http, h, TINY) - started:.1f} s")
        app = plain_base.json()["app_name"]
        asyncio.run(measure(studio, args, app_name=app, tuned=None, plain=plain, lora=lora))


if __name__ == "__main__":
    main()
