"""The entry point `serve_config.yaml` ships, as the tests run it: who listens, and bodies refused early.

Raw sockets, so the test controls how much of a body is sent before it reads the answer: a caller
without a key, or with a body over its limit, gets its 401 / 413 while most of the declared body is
still unsent, through whatever forwards the entry port to the ingress replicas.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.integration.conftest import ServeApp
from tests.serve_modes import shipped_mode

pytestmark = pytest.mark.integration

GIB = 1024**3


def listener_of(port: int) -> psutil.Process:
    for process in psutil.Process().children(recursive=True):
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            return process
    raise AssertionError(f"no process of this test run listens on {port}")


def post_head(url: str, path: str, headers: dict[str, str]) -> socket.socket:
    """Open a connection and send a POST's request line and headers; return the socket."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    """Read the whole response (headers, then the body its Content-Length declares); return the status
    code and what was read. The body may come in a later segment than the headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    lengths = [
        line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    while lengths and len(body) < int(lengths[0]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), head + b"\r\n\r\n" + body


def test_the_entry_port_is_served_as_serve_config_ships(serve_app: ServeApp, http: httpx.Client) -> None:
    port = urlsplit(serve_app.url).port
    assert port is not None
    listener = listener_of(port)
    expected = "ray::ProxyActor" if shipped_mode() in ("proxy", "direct") else "haproxy"
    assert expected in " ".join(listener.cmdline()), listener.cmdline()
    assert http.get("/healthz").json() == {"status": "ok"}


def test_an_upload_without_a_key_is_refused_before_its_body(serve_app: ServeApp) -> None:
    sock = post_head(
        serve_app.url,
        "/v1/files",
        {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(GIB)},
    )
    with sock:
        sock.sendall(b"--b\r\n" + b"x" * (64 << 10))  # 64 KiB of a declared GiB
        status, data = read_status(sock)
    assert status == 401, data[:400]
    assert b"authentication_error" in data or b"Content-Length" in data


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    serve_app: ServeApp, http: httpx.Client
) -> None:
    created = http.post("/admin/clients", json={"name": "entry-limits"}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{created['id']}/keys", headers=serve_app.admin).json()["secret"]
    limit = serve_app.settings.api.max_json_body_bytes
    sock = post_head(
        serve_app.url,
        "/v1/fine_tuning/jobs",
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Content-Length": str(limit * 64),
        },
    )
    with sock:
        sock.sendall(b'{"model": "')  # the headers alone decide
        status, data = read_status(sock)
    assert status == 413, data[:400]
    assert b"over the limit" in data


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(serve_app: ServeApp, http: httpx.Client) -> None:
    created = http.post("/admin/clients", json={"name": "entry-chunked"}, headers=serve_app.admin).json()
    key = http.post(f"/admin/clients/{created['id']}/keys", headers=serve_app.admin).json()["secret"]
    limit = serve_app.settings.api.max_json_body_bytes
    sock = post_head(
        serve_app.url,
        "/v1/fine_tuning/jobs",
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    )
    with sock:
        # Just past the limit, and no closing chunk: the server answers from what it counted. (More
        # would race the server's close with our sends, and a reset can drop the answer unread.)
        chunk = b"x" * (64 << 10)
        for _ in range(limit // len(chunk) + 2):
            sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        status, data = read_status(sock)
    assert status == 413, data[:400]
