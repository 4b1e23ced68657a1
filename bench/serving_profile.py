"""Where a served request's CPU goes: py-spy profiles of the ingress and the model server under load.

    .venv/bin/python -m bench.serving_profile [--seconds 20] [--concurrency 32] [--out docs/research/profiles]

Starts Mini Studio on a private Ray cluster (what `serve_config.yaml` ships), deploys the tiny base model,
then for not streamed and streamed `/v1/completions` (32 tokens forced) keeps `--concurrency` requests in
flight for `--seconds` while `py-spy record` samples (100 Hz, CPU only, `--nonblocking`) the ingress
replica, the model server's replica and its engine core process; with `--vllm`, the same load against a
plain `vllm serve` of the same engine settings, its API server and engine core profiled alike.
Writes, per mode and process, `<mode>-<process>.txt`: the samples' count, then the functions with the
largest inclusive and self share of that process's samples (`collapsed` stacks are summarised, not kept:
they run to megabytes). Figures are shares of each process's own samples, not of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import process_cpu
from bench.common import running_studio, vllm_serve
from bench.serving_bench import TINY, body, via_http, vllm_args

PY_SPY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"


def find(label_prefix: str) -> int:
    """Return the pid of the bench's first descendant process whose label starts with `label_prefix`.

    Raises:
        RuntimeError: no such process (the replica is not running).
    """
    for pid, (label, _) in process_cpu.snapshot().items():
        if label.startswith(label_prefix):
            return pid
    raise RuntimeError(f"no process labelled {label_prefix}* under this bench")


def engine_core(server_pid: int) -> int | None:
    """Return the pid of vLLM's engine core process started by `server_pid`, if any."""
    for child in psutil.Process(server_pid).children(recursive=True):
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
            return child.pid
    return None


def summarise(collapsed: Path, top: int = 30) -> str:
    """Return a summary of py-spy's `raw` (collapsed) output: inclusive and self shares per function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():  # a frame's text broken over lines (a docstring)
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + _where(frame) for frame in stack.split(";")[1:]]  # drop thread
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"samples: {total}", "", "inclusive % | function (file)"]
    lines += [f"{n * 100 / max(total, 1):6.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self % | function (file)"]
    lines += [f"{n * 100 / max(total, 1):6.1f}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def _where(frame: str) -> str:
    """`func (path/to/file.py:12)` -> ` (file.py)`: per function, not per line."""
    if " (" not in frame:
        return ""
    path = frame.split(" (", 1)[1].rsplit(":", 1)[0].rstrip(")")
    parts = Path(path).parts
    return f" ({'/'.join(parts[-2:])})"


Server = tuple[str, dict[str, str]]  # base URL, request headers


async def load(server: Server, request: dict[str, Any], concurrency: int, seconds: float) -> int:
    """Keep `concurrency` requests in flight to `server` for `seconds`; return how many completed."""
    url, headers = server
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + seconds
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        call = via_http(http, headers)

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await call(request)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def profile(
    targets: dict[str, int], server: Server, args: argparse.Namespace, *, stream: bool, side: str
) -> None:
    """Sample `targets` ({name: pid}) with py-spy while the load runs; write one summary per target."""
    mode = f"{side}-{'stream' if stream else 'whole'}-c{args.concurrency}"
    raw = {name: args.out / f"{mode}-{name}.collapsed" for name in targets}
    record = [str(PY_SPY), "record", "-d", str(int(args.seconds)), "-r", "100", "--nonblocking", "-f", "raw"]
    spies = [
        subprocess.Popen(
            [*record, "-p", str(pid), "-o", str(raw[name])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in targets.items()
    ]
    request = body(TINY, args.max_tokens, stream=stream)
    done = asyncio.run(load(server, request, args.concurrency, args.seconds + 1))
    for spy in spies:
        spy.wait(timeout=120)
    print(f"{mode}: {done / (args.seconds + 1):.1f} requests/s while profiled", flush=True)
    for name, path in raw.items():
        if path.exists():
            summary = summarise(path)
            (args.out / f"{mode}-{name}.txt").write_text(
                f"# {mode}, {name}: py-spy record -r 100 --nonblocking, {args.seconds:.0f} s, "
                f"{args.concurrency} requests in flight, {done} completed\n" + summary
            )
            path.unlink()
            print(f"  {name}: {summary.splitlines()[0]} -> {args.out / f'{mode}-{name}.txt'}", flush=True)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("docs/research/profiles"))
    parser.add_argument("--vllm", action="store_true", help="profile a plain `vllm serve` too")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with running_studio(dashboard=False) as studio, httpx.Client(base_url=studio.url, timeout=900) as http:
        deployment = http.post("/v1/deployments", headers=studio.headers, json={"model": TINY}).json()
        status_url = f"/v1/deployments/{deployment['id']}"
        while http.get(status_url, headers=studio.headers).json()["status"] != "ready":
            time.sleep(1)
        ingress = find("ServeReplica:mini-studio:StudioIngress")
        server = find(f"ServeReplica:{deployment['app_name']}:ModelServer")
        targets = {"ingress": ingress, "model-server": server}
        if (core := engine_core(server)) is not None:
            targets["engine-core"] = core
        server = (studio.url, studio.headers)
        for stream in (False, True):
            asyncio.run(load(server, body(TINY, args.max_tokens, stream=stream), args.concurrency, 3))  # warm
            profile(targets, server, args, stream=stream, side="studio")
        if args.vllm:
            from ray import serve

            handle = serve.get_deployment_handle("ModelServer", deployment["app_name"])
            settings = handle.engine_settings.remote().result(timeout_s=60)
            env = {"VLLM_NO_USAGE_STATS": "1", **settings["env"]}
            log_path = studio.data_dir / "vllm.log"
            with vllm_serve(vllm_args(settings, adapter=None), env=env, log_path=log_path) as url:
                api = next(
                    p.pid for p in psutil.Process().children(recursive=True)
                    if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())
                )  # fmt: skip
                vllm_targets = {"api-server": api}
                if (core := engine_core(api)) is not None:
                    vllm_targets["engine-core"] = core
                plain: Server = (url, {})
                for stream in (False, True):
                    asyncio.run(load(plain, body(TINY, args.max_tokens, stream=stream), args.concurrency, 3))
                    profile(vllm_targets, plain, args, stream=stream, side="vllm")


if __name__ == "__main__":
    main()
