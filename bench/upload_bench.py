"""Dataset upload through Serve's HTTP proxy vs a raw local disk write of the same bytes, one run.

    .venv/bin/python -m bench.upload_bench [--gigabytes 1.0]

Prints: raw write MB/s, upload MB/s (multipart `POST /v1/files` through the proxy, streamed from disk),
the ingress replica's and the proxy's peak RSS growth during the upload, background validation MB/s
through the service, and the validator alone in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench.common import running_studio

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


class PeakRss:
    """Samples a process's RSS every 20 ms from a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def pid_of(title: str) -> int:
    """Find a Ray worker by its process title (`ray::ServeReplica:mini-studio:StudioIngress...`)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith(f"ray::{title}"):
            return int(process.pid)
    raise RuntimeError(f"no process titled ray::{title}")


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parser.parse_args()
    from studio.domain.datasets import validate_chunks

    scratch = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    source = scratch / "bench.jsonl"
    rows = generate(source, int(args.gigabytes * 1e9))
    size = source.stat().st_size
    mb = size / 1e6
    raw_s = raw_write(source, scratch / "copy.jsonl")
    (scratch / "copy.jsonl").unlink()

    with running_studio() as studio:
        replica, proxy = pid_of("ServeReplica:mini-studio:StudioIngress"), pid_of("ProxyActor")
        # Parts first, while the replica's heap is fresh: a process rarely returns memory to the OS,
        # so after the single-request upload its peak would hide the parts' own growth.
        shifted = scratch / "shifted.jsonl"
        with source.open("rb") as inp, shifted.open("wb") as out:
            out.write(b'{"prompt": "shift", "completion": "one"}\n')
            while block := inp.read(CHUNK):
                out.write(block)
        with (
            PeakRss(replica) as parts_rss,
            PeakRss(proxy) as parts_proxy_rss,
            httpx.Client(timeout=3600) as http,
        ):
            started_parts = time.perf_counter()
            parts_file = parts_upload(http, studio.url, studio.headers, shifted, 64 << 20)
            parts_s = time.perf_counter() - started_parts
        shifted.unlink()
        # Wait for the parts' file to be validated, so its validation doesn't overlap the next upload.
        with httpx.Client(timeout=30, headers=studio.headers) as http:
            while http.get(f"{studio.url}/v1/files/{parts_file}").json()["status"] == "uploaded":
                time.sleep(0.2)

        boundary = "bench-boundary-1234"
        headers = {**studio.headers, "content-type": f"multipart/form-data; boundary={boundary}"}
        with PeakRss(replica) as replica_rss, PeakRss(proxy) as proxy_rss, httpx.Client(timeout=3600) as http:
            started = time.perf_counter()
            response = http.post(
                f"{studio.url}/v1/files", content=multipart(source, boundary), headers=headers
            )
            upload_s = time.perf_counter() - started
        response.raise_for_status()
        file_id = response.json()["id"]
        with httpx.Client(timeout=30, headers=studio.headers) as http:
            while (found := http.get(f"{studio.url}/v1/files/{file_id}").json())["status"] == "uploaded":
                time.sleep(0.2)
        service_validation_s = time.perf_counter() - started - upload_s

    started = time.perf_counter()
    with source.open("rb") as file:
        report = validate_chunks(iter(lambda: file.read(CHUNK), b""))
    validator_s = time.perf_counter() - started
    source.unlink()

    print(
        f"file: {mb:.0f} MB, {rows} chat rows, {os.cpu_count()} cores; status {found['status']}, "
        f"{report.stats.rows} rows validated"
    )
    print(f"raw local disk write (4 MiB blocks + fsync) {mb / raw_s:8.1f} MB/s")
    print(
        f"upload through Serve's proxy (POST /v1/files)  {mb / upload_s:8.1f} MB/s "
        f"({100 * raw_s / upload_s:.0f}% of raw)"
    )
    print(f"ingress replica peak RSS growth          {replica_rss.growth_mb:8.1f} MB")
    print(f"Serve proxy peak RSS growth              {proxy_rss.growth_mb:8.1f} MB")
    print(
        f"Uploads API, 64 MiB parts, sequential    {mb / parts_s:8.1f} MB/s "
        f"({100 * raw_s / parts_s:.0f}% of raw, assembly included); peak RSS growth: "
        f"replica {parts_rss.growth_mb:.1f} MB, proxy {parts_proxy_rss.growth_mb:.1f} MB"
    )
    print(f"validation in the service (background)   {mb / service_validation_s:8.1f} MB/s")
    print(f"validator alone, this process            {mb / validator_s:8.1f} MB/s")


if __name__ == "__main__":
    main()
