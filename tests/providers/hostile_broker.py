"""A broker that misbehaves on cue, over real TLS on loopback: what occ-boot meets when a
controller restarts mid-download, a transfer is throttled, or something that is not HTTP
answers. Each GET /v1/agent takes the next way of answering from a script; /v1/identity and
/v1/report take anything and keep the reports."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Way = Literal["cut", "whole", "no-length", "not-http", "trickle", "unavailable"]


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 and its key (openssl, as the broker's)."""
    cert, key = directory / "broker.pem", directory / "broker.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-subj", "/CN=hostile broker", "-days", "1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
    return cert, key


@dataclass
class HostileBroker:
    agent: bytes
    script: list[Way]
    url: str = ""
    ca: str = ""
    served: list[Way] = field(default_factory=list)
    reports: list[dict[str, object]] = field(default_factory=list)

    def answer(self, conn: ssl.SSLSocket) -> None:
        with conn:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            head, _, body = request.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            length = next((int(h.split(":")[1]) for h in lines[1:]
                           if h.lower().startswith("content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            if method == "POST":
                if path == "/v1/report":
                    self.reports.append(json.loads(body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            way = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            self.served.append(way)
            self.send(conn, way)

    def send(self, conn: ssl.SSLSocket, way: Way) -> None:
        full = (f"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n"
                f"Content-Length: {len(self.agent)}\r\nConnection: close\r\n\r\n").encode()
        if way == "whole":
            conn.sendall(full + self.agent)
        elif way == "cut":  # (a controller restarting mid-download)
            conn.sendall(full + self.agent[:len(self.agent) // 2])
        elif way == "no-length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + self.agent)
        elif way == "not-http":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        elif way == "unavailable":
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        elif way == "trickle":  # a byte at a time, each well within any socket timeout
            conn.sendall(full)
            for byte in self.agent:
                conn.sendall(bytes([byte]))
                time.sleep(0.2)


@contextmanager
def hostile_broker(directory: Path, agent: bytes, script: list[Way]) -> Iterator[HostileBroker]:
    cert, key = certificate(directory)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    broker = HostileBroker(agent, list(script), ca=cert.read_text())
    listener = socket.create_server(("127.0.0.1", 0))
    broker.url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(30)
                conn = tls.wrap_socket(raw, server_side=True)
            except OSError:
                raw.close()
                continue
            threading.Thread(target=quietly, args=(broker.answer, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        stop.set()
        listener.close()
        thread.join(10)


def quietly(answer: Callable[[ssl.SSLSocket], None], conn: ssl.SSLSocket) -> None:
    """(a client that hangs up mid-answer is what some of these tests do)"""
    with suppress(OSError):  # (ssl.SSLError is an OSError)
        answer(conn)
