"""Dataset upload through each way of running Serve's entry point vs a raw disk write, one run.

    .venv/bin/python -m bench.upload_bench [--gigabytes 1.0]
        [--modes proxy,direct,haproxy,haproxy-inline,shipped] [--no-parts] [--serve-env NAME=VALUE ...]

Writes the file once, then for each mode (`tests/serve_modes.py`: Serve's Python proxy, direct ingress
reached on the replica's own port, HAProxy on the entry port, what `serve_config.yaml` ships; a mode
named twice runs twice, `--modes shipped,shipped`) times a raw local copy of it (4 MiB blocks + fsync)
and starts a private Ray cluster running Mini Studio in a child process, waits until the cluster's
memory has settled, and sends the file as one multipart `POST /v1/files` (streamed from disk), then
through the Uploads API in 64 MiB parts. Prints, side by side: MB/s and its share of the raw rate, and
the peak RSS growth of every Mini Studio process (every process under the cluster: ingress replicas,
Serve's proxy, HAProxy and its manager, the controller, the database actor, ...; the largest per kind),
then background validation MB/s in the service and the validator alone in this process.
The machine may be shared: rates are noisy, compare columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import running_studio
from tests.serve_modes import MODES, mode_env, private_ports, replica_ports

CHUNK = 4 << 20


def generate(path: Path, size: int) -> int:
    rows = 0
    with path.open("wb") as out:
        written = 0
        while written < size:
            line = (
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "You answer briefly and precisely."},
                            {
                                "role": "user",
                                "content": f"Row {rows}: what is the square of {rows % 9973}? " + "pad " * 40,
                            },
                            {
                                "role": "assistant",
                                "content": f"The square of {rows % 9973} is {(rows % 9973) ** 2}.",
                            },
                        ]
                    }
                ).encode()
                + b"\n"
            )
            out.write(line)
            written += len(line)
            rows += 1
    return rows


def raw_write(source: Path, target: Path) -> float:
    started = time.perf_counter()
    with source.open("rb") as inp, target.open("wb") as out:
        while block := inp.read(CHUNK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started


def kind_of(process: psutil.Process) -> str:
    """Name a cluster process by what it runs: `ray::ServeReplica:...:StudioIngress`, `haproxy`, ..."""
    cmdline = process.cmdline()
    if not cmdline:
        return process.name()
    first = cmdline[0].split()[0]
    if first.startswith("ray::ServeReplica:"):
        return "ray::" + first.rsplit(":", 1)[-1]  # the deployment's name
    # A worker's title names the method it runs: `ray::StudioIngress.handle_request_with_rejection`.
    return first.split(".", 1)[0] if first.startswith("ray::") else Path(first).name


class TreeRss:
    """Samples the RSS of every process under this one (the private cluster) every 50 ms.

    A process's growth is its peak minus its first sample; processes that start meanwhile (a
    validation task's worker) count from their first sample too.
    """

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._processes: list[psutil.Process] = []
        self._listed = 0.0
        self._primed = False  # the first sample is taken

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.05)

    def sample(self) -> None:
        if time.monotonic() - self._listed > 0.5:
            self._processes = psutil.Process().children(recursive=True)
            self._listed = time.monotonic()
        for process in self._processes:
            try:
                rss = process.memory_info().rss
                if process.pid not in self.kinds:
                    # A process that starts meanwhile grows by its imports, not by the upload: say so.
                    late = " (new)" if self._primed else ""
                    self.kinds[process.pid] = kind_of(process) + late
            except psutil.Error:
                continue
            self.first.setdefault(process.pid, rss)
            self.peak[process.pid] = max(self.peak.get(process.pid, 0), rss)

    def __enter__(self) -> TreeRss:
        self.sample()
        self._primed = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mb(self) -> dict[str, float]:
        """Return the largest growth per kind of process, in MB."""
        out: dict[str, float] = {}
        for pid, peak in self.peak.items():
            kind = self.kinds.get(pid, "?")
            out[kind] = max(out.get(kind, 0.0), (peak - self.first[pid]) / 1e6)
        return out


def multipart(path: Path, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    with path.open("rb") as file:
        while block := file.read(CHUNK):
            yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def parts_upload(http: httpx.Client, url: str, headers: dict[str, str], path: Path, part_bytes: int) -> str:
    """Send `path` through the Uploads API in parts of `part_bytes`; return the file id."""
    size = path.stat().st_size
    upload = http.post(
        f"{url}/v1/uploads",
        headers=headers,
        json={
            "filename": "bench-parts.jsonl",
            "purpose": "fine-tune",
            "bytes": size,
            "mime_type": "application/jsonl",
        },
    )
    upload.raise_for_status()
    upload_id = upload.json()["id"]
    part_ids = []
    with path.open("rb") as file:
        while block := file.read(part_bytes):
            part = http.post(
                f"{url}/v1/uploads/{upload_id}/parts",
                headers=headers,
                files={"data": ("part", block, "application/octet-stream")},
            )
            part.raise_for_status()
            part_ids.append(part.json()["id"])
    done = http.post(f"{url}/v1/uploads/{upload_id}/complete", headers=headers, json={"part_ids": part_ids})
    done.raise_for_status()
    return str(done.json()["file"]["id"])


def entry_url(mode: str, url: str) -> str:
    """Return where a client sends requests in `mode`: the entry port, or (direct) the replica's port."""
    if mode != "direct":
        return url
    replicas = [
        process.pid
        for process in psutil.Process().children(recursive=True)
        if kind_of(process) == "ray::StudioIngress"
    ]
    deadline = time.monotonic() + 60  # the replica opens its port just after it reports ready
    while not (ports := [port for pid in replicas for port in replica_ports(pid)]):
        if time.monotonic() > deadline:
            raise RuntimeError("direct ingress: no ingress replica listens on its own port")
        time.sleep(0.2)
    return f"http://127.0.0.1:{ports[0]}"


def wait_processed(url: str, headers: dict[str, str], file_id: str) -> str:
    with httpx.Client(timeout=30, headers=headers) as http:
        while (status := http.get(f"{url}/v1/files/{file_id}").json()["status"]) == "uploaded":
            time.sleep(0.2)
    return str(status)


def settle(quiet_mb: float = 2.0, timeout_s: float = 60.0) -> None:
    """Wait until the cluster's processes stop growing (workers Ray starts ahead of need import for a
    while after the app is up): less than `quiet_mb` in all over one second, or `timeout_s`."""

    def total() -> int:
        found = 0
        for process in psutil.Process().children(recursive=True):
            try:
                found += process.memory_info().rss
            except psutil.Error:
                continue
        return found

    deadline = time.monotonic() + timeout_s
    before = total()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = total()
        if abs(now - before) < quiet_mb * 1e6:
            return
        before = now


def one_mode(mode: str, source: Path, parts: bool, extra_env: dict[str, str]) -> dict[str, Any]:
    """Run Mini Studio in `mode`; return the upload's seconds and RSS growth (and the parts')."""
    result: dict[str, Any] = {"mode": mode}
    with running_studio(controller_env=private_ports({**mode_env(mode), **extra_env})) as studio:
        url = entry_url(mode, studio.url)
        settle()
        if parts:
            # Parts first, while the heaps are fresh: a process rarely returns memory to the OS, so
            # after the single-request upload its peak would hide the parts' own growth.
            shifted = source.with_name("shifted.jsonl")
            with source.open("rb") as inp, shifted.open("wb") as out:
                out.write(b'{"prompt": "shift", "completion": "one"}\n')
                while block := inp.read(CHUNK):
                    out.write(block)
            with TreeRss() as parts_rss, httpx.Client(timeout=3600) as http:
                started = time.perf_counter()
                parts_file = parts_upload(http, url, studio.headers, shifted, 64 << 20)
                result["parts_s"] = time.perf_counter() - started
            result["parts_rss_mb"] = parts_rss.growth_mb()
            shifted.unlink()
            # Validated before the next upload, so the two don't overlap.
            wait_processed(url, studio.headers, parts_file)

        boundary = "bench-boundary-1234"
        headers = {**studio.headers, "content-type": f"multipart/form-data; boundary={boundary}"}
        with TreeRss() as rss, httpx.Client(timeout=3600) as http:
            started = time.perf_counter()
            response = http.post(f"{url}/v1/files", content=multipart(source, boundary), headers=headers)
            result["upload_s"] = time.perf_counter() - started
        response.raise_for_status()
        result["rss_mb"] = rss.growth_mb()
        result["status"] = wait_processed(url, studio.headers, response.json()["id"])
        result["validation_s"] = time.perf_counter() - started - result["upload_s"]
    return result


def table(results: list[dict[str, Any]], mb: float, key: str, rss_key: str) -> list[str]:
    """Rows: rate and share of the raw write timed just before that run, then RSS growth per kind of
    process (MB), one column per run."""
    head = f"{'':<32}" + "".join(f"{r['mode']:>16}" for r in results)
    rate = f"{'MB/s (% of raw write)':<32}" + "".join(
        f"{mb / r[key]:>10.1f} ({100 * r['raw_s'] / r[key]:>2.0f}%)" for r in results
    )
    raw = f"{'raw write just before (MB/s)':<32}" + "".join(f"{mb / r['raw_s']:>16.1f}" for r in results)
    kinds = sorted({kind for r in results for kind in r[rss_key]})
    shown = [
        kind
        for kind in kinds
        if any(r[rss_key].get(kind, 0) >= 5 for r in results)
        or any(name in kind for name in ("Proxy", "Ingress", "haproxy"))
    ]
    rows = [
        f"  RSS growth {kind[:19]:<19}" + "".join(f"{r[rss_key].get(kind, 0):>13.1f} MB" for r in results)
        for kind in shown
    ]
    rest = [max((v for k, v in r[rss_key].items() if k not in shown), default=0.0) for r in results]
    rows.append(f"  RSS growth {'any other process':<19}" + "".join(f"{v:>13.1f} MB" for v in rest))
    return [head, rate, raw, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--no-parts", action="store_true", help="skip the Uploads API (parts) upload")
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for Serve's controller in every mode (RAY_SERVE_HAPROXY_TUNE_BUFSIZE=65536)",
    )
    parser.add_argument("--one-mode", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_mode:  # the child process of one mode
        extra = dict(item.split("=", 1) for item in args.serve_env)
        found = one_mode(args.one_mode, Path(args.source), not args.no_parts, extra)
        Path(args.result).write_text(json.dumps(found))
        return
    from studio.domain.datasets import validate_chunks

    scratch = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    source = scratch / "bench.jsonl"
    rows = generate(source, int(args.gigabytes * 1e9))
    mb = source.stat().st_size / 1e6
    results = []
    for mode in args.modes.split(","):  # a mode named twice runs twice (repeats, in turns)
        raw_s = raw_write(source, scratch / "copy.jsonl")  # the disk's rate drifts: time it per run
        (scratch / "copy.jsonl").unlink()
        out = scratch / f"{mode}.json"
        argv = [sys.executable, "-m", "bench.upload_bench", "--one-mode", mode, "--source", str(source)]
        argv += ["--result", str(out), *(["--no-parts"] if args.no_parts else [])]
        argv += [f"--serve-env={item}" for item in args.serve_env]
        print(f"running {mode} ...", flush=True)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        results.append({**json.loads(out.read_text()), "raw_s": raw_s})

    started = time.perf_counter()
    with source.open("rb") as file:
        report = validate_chunks(iter(lambda: file.read(CHUNK), b""))
    validator_s = time.perf_counter() - started
    source.unlink()

    print(
        f"\nfile: {mb:.0f} MB, {rows} chat rows ({report.stats.rows} validated here), "
        f"{os.cpu_count()} cores; statuses {', '.join(r['status'] for r in results)}"
    )
    raws = sorted(mb / r["raw_s"] for r in results)
    print(f"raw local disk write (4 MiB blocks + fsync), before each run: {raws[0]:.1f}-{raws[-1]:.1f} MB/s")
    print("\none POST /v1/files (multipart, streamed from disk)")
    print("\n".join(table(results, mb, "upload_s", "rss_mb")))
    if not args.no_parts:
        print("\nUploads API, 64 MiB parts, sequential (assembly included)")
        print("\n".join(table(results, mb, "parts_s", "parts_rss_mb")))
    print(
        f"\n{'validation in the service (MB/s)':<32}"
        + "".join(f"{mb / r['validation_s']:>16.1f}" for r in results)
    )
    print(f"validator alone, this process: {mb / validator_s:.1f} MB/s")


if __name__ == "__main__":
    main()
