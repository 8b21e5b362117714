"""The real controller (`occ-controller`) as a child process of the tests: start, kill, restart."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from oneclick.controlplane.local import free_port


@dataclass
class ControllerProcess:
    kubeconfig: Path
    namespace: str  # where the controller keeps its Secrets
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # occ-controller's command line options
    # The controller's own credentials, when they are not the admin's (a ServiceAccount's).
    identity: Path | None = None
    broker_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def broker_url(self) -> str:
        return f"https://127.0.0.1:{self.broker_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60.0, wait: bool = True) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.identity or self.kubeconfig),
               "OCC_NAMESPACE": self.namespace, "OCC_BROKER_LISTEN": "127.0.0.1",
               "OCC_BROKER_PORT": str(self.broker_port),
               "OCC_METRICS_PORT": str(self.metrics_port), "OCC_HEALTH_PORT": "0",
               **self.extra_env}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(["occ-controller", *self.args], env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"occ-controller exited {self.process.returncode}:\n"
                                     + self.log.read_text()[-3000:])
            try:
                if httpx.get(f"{self.broker_url}/healthz", verify=self.tls(),
                             timeout=2).status_code == 200:
                    return
            except (httpx.HTTPError, AssertionError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise AssertionError("the broker never became ready:\n" + self.log.read_text()[-3000:])

    def ca_pem(self) -> str:
        from tests.conftest import kubectl  # (the conftest imports this module)

        data = kubectl(self.kubeconfig, "get", "secret", "oneclick-broker-ca", "-n",
                       self.namespace, "-o", "jsonpath={.data.tls\\.crt}").stdout
        assert data, "the controller made no broker CA Secret"
        return base64.b64decode(data).decode()

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem())

    def _socket_inodes(self) -> set[str]:
        assert self.process is not None
        inodes = set()
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        return inodes

    def listening_ports(self) -> set[int]:
        """The TCP ports this process listens on now (from /proc: its sockets' inodes)."""
        inodes = self._socket_inodes()
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    def peers(self) -> set[str]:
        """The addresses this process has TCP connections from, established now (IPv4)."""
        inodes = self._socket_inodes()
        peers = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                address = bytes.fromhex(fields[2].split(":")[0])[::-1]  # little-endian
                peers.add(".".join(str(b) for b in address))
        return peers

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
