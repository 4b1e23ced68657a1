"""Real servers for the tests, each started once per run on free loopback ports.

Each can be replaced by an external one through an environment variable:
`STUDIO_TEST_MONGO_URL`, `STUDIO_TEST_REDIS_URL`, `STUDIO_TEST_S3_ENDPOINT` (+ `_ACCESS_KEY`, `_SECRET_KEY`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout_s} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A server process the tests own: stop it, kill it, start it again on the same port and files."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 30.0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        wait_for(lambda: port_open(self.port), timeout_s=self.ready_timeout_s, what=self.name)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def mongo_server(root: Path) -> Server:
    """SecantusDB (MongoDB wire protocol, WiredTiger files) as its own process."""
    port = free_port()
    data = root / "mongodb"
    data.mkdir(parents=True, exist_ok=True)
    return Server(
        name="secantusdb",
        argv=[
            str(BIN / "secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(data),
            "--cache-size",
            "128M",
            "--log-level",
            "WARNING",
        ],
        port=port,
        log_path=root / "mongodb.log",
    )


def mongo_url_of(server: Server) -> str:
    return f"mongodb://127.0.0.1:{server.port}/?directConnection=true"


def redis_server(root: Path) -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    return Server(
        name="redis-server",
        argv=[
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        port=port,
        log_path=root / "redis.log",
    )


S3_ACCESS_KEY = "studio-test"
S3_SECRET_KEY = "studio-test-secret-key"


def s3_server(root: Path, *, bucket: str) -> Server:
    """SeaweedFS `weed mini`: master, volume, filer and an S3 gateway that checks SigV4 signatures."""
    data = root / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "metrics")}
    return Server(
        name="seaweedfs",
        argv=[
            str(BIN / "weed"),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={ports['s3']}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-metricsPort={ports['metrics']}",
            "-webdav=false",
            "-admin.ui=false",
        ],
        port=ports["s3"],
        log_path=root / "seaweedfs.log",
        env={"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "S3_BUCKET": bucket},
        ready_timeout_s=60.0,
    )
