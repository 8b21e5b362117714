"""A real etcd, kube-apiserver and kube-controller-manager on loopback, with certificates of
their own (and kube-scheduler when asked: with no node it has nothing to schedule).

`start()` brings them up on free ports, TLS everywhere (etcd too), RBAC on, and writes an admin
kubeconfig; `ControlPlane.stop()` ends them and waits for them. Everything a later process needs
to find or stop them is in `<workdir>/state.json`, so `occ dev down` works from another shell.
The controller manager is what makes it behave like a real cluster: deleted namespaces go away,
owner references are garbage-collected, every namespace gets its default service account.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from oneclick.controlplane import controllers, kubeconfig
from oneclick.controlplane.binaries import ensure_binaries
from oneclick.kits.pki import CertificateAuthority, new_signing_key_pem
from oneclick.kits.processes import running

STATE_FILE = "state.json"
READY_TIMEOUT = 120.0
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not start or be reached; the message says what to look at."""


@dataclass
class ControlPlane:
    """A running control plane: where its kubeconfig is and which processes are its own."""

    kubeconfig: Path
    server: str
    workdir: Path | None = None  # None for a cluster we did not start
    etcd_pid: int | None = None
    apiserver_pid: int | None = None
    etcd_binary: str | None = None
    apiserver_binary: str | None = None
    controller_manager_pid: int | None = None
    controller_manager_binary: str | None = None
    scheduler_pid: int | None = None  # only when started with the scheduler
    scheduler_binary: str | None = None
    node_address: str | None = None  # where pods reach the API server, when started for a node

    @property
    def owned(self) -> bool:
        return self.workdir is not None

    def _processes(self) -> list[tuple[int | None, str | None]]:
        """(pid, binary) of each process, in the order they stop: clients before the API
        server, the API server before its store."""
        return [(self.controller_manager_pid, self.controller_manager_binary),
                (self.scheduler_pid, self.scheduler_binary),
                (self.apiserver_pid, self.apiserver_binary),
                (self.etcd_pid, self.etcd_binary)]

    def pids(self) -> list[int]:
        return [pid for pid, _ in self._processes() if pid is not None]

    def save(self) -> None:
        assert self.workdir is not None
        state = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane | None:
        try:
            state = json.loads((workdir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            kubeconfig=Path(state["kubeconfig"]),
            server=state["server"],
            workdir=Path(state["workdir"]),
            etcd_pid=state.get("etcd_pid"),
            apiserver_pid=state.get("apiserver_pid"),
            etcd_binary=state.get("etcd_binary"),
            apiserver_binary=state.get("apiserver_binary"),
            controller_manager_pid=state.get("controller_manager_pid"),
            controller_manager_binary=state.get("controller_manager_binary"),
            scheduler_pid=state.get("scheduler_pid"),
            scheduler_binary=state.get("scheduler_binary"),
            node_address=state.get("node_address"),
        )

    def alive(self) -> bool:
        """Every process it started is still ours and running (a reused pid does not count).
        etcd, the API server and the controller manager are always started: a plane missing
        one (an older one, say) is not alive."""
        always = [(self.etcd_pid, self.etcd_binary), (self.apiserver_pid, self.apiserver_binary),
                  (self.controller_manager_pid, self.controller_manager_binary)]
        asked = [(self.scheduler_pid, self.scheduler_binary)] if self.scheduler_pid else []
        return all(_is_our_process(pid, binary) for pid, binary in always + asked)

    def ready(self, timeout: float = 5.0) -> bool:
        return readyz(self.kubeconfig, timeout) == "ok"

    def stop(self, timeout: float = 20.0) -> None:
        """End the controller manager and scheduler, then kube-apiserver, then etcd; SIGKILL
        whatever has not ended after `timeout`."""
        if not self.owned:
            return
        for pid, binary in self._processes():
            if pid is not None and _is_our_process(pid, binary):
                _terminate(pid, timeout)
        assert self.workdir is not None
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()


def _is_our_process(pid: int | None, binary: str | None) -> bool:
    if pid is None or binary is None:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return exe == binary and running(pid)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if done == pid:
                return True
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def _spawn(argv: list[str], log: Path, detach: bool) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the caller does not reach them
            preexec_fn=None if detach else _die_with_parent(),
        )


def _ssl_context(pki: Path, client: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / f"{client}.crt"), str(pki / f"{client}.key"))
    return context


def _wait_healthy(
    name: str, url: str, context: ssl.SSLContext, proc: subprocess.Popen[bytes], log: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(verify=context, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode} while starting; "
                    f"its log {log} ends with:\n{_tail(log)}"
                )
            try:
                response = client.get(url)
                last = f"{response.status_code} {response.text[:200]}"
                if response.status_code == 200:
                    return
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.2)
    raise ControlPlaneError(
        f"{name} did not become healthy at {url} within {timeout:.0f}s "
        f"(last answer: {last}); its log {log} ends with:\n{_tail(log)}"
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_pki(pki: Path, server: str, node_address: str | None) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("oneclick-dev-ca")
    ca.keypair().write(pki / "ca.crt", pki / "ca.key")
    loopback = ("127.0.0.1", "localhost")
    ca.issue("etcd", server_names=loopback, client=True).write(pki / "etcd.crt", pki / "etcd.key")
    ca.issue("kube-apiserver-etcd-client", client=True).write(
        pki / "apiserver-etcd.crt", pki / "apiserver-etcd.key"
    )
    ca.issue(
        "kube-apiserver",
        server_names=(*loopback, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                      "10.0.0.1", *([node_address] if node_address else [])),
    ).write(pki / "apiserver.crt", pki / "apiserver.key")
    # The API server's own identity towards kubelets (logs, exec, port-forward).
    ca.issue("kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
             ).write(pki / "apiserver-kubelet.crt", pki / "apiserver-kubelet.key")
    ca.issue("oneclick-admin", organizations=("system:masters",), client=True).write(
        pki / "admin.crt", pki / "admin.key"
    )
    signing_key, public_key = new_signing_key_pem()
    (pki / "sa.key").touch(mode=0o600)
    (pki / "sa.key").write_bytes(signing_key)
    (pki / "sa.pub").write_bytes(public_key)
    controllers.write_credentials(pki, ca, server)


def start(workdir: Path, *, detach: bool = False, scheduler: bool = False,
          node_address: str | None = None, timeout: float = READY_TIMEOUT) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager (and kube-scheduler, if asked)
    under `workdir`; return once the API server is ready and the others are healthy.

    With `node_address` (this machine's, for a node: controlplane.node), the API server also
    listens beyond loopback and publishes that address as the `kubernetes` Service's endpoint,
    which is where pods reach it.

    With `detach`, they outlive the calling process (for `occ dev up`); otherwise they are
    killed by the kernel if the caller dies, so a crashed test run leaves nothing behind.
    """
    binaries = ensure_binaries()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"https://127.0.0.1:{etcd_port}"
    _write_pki(pki, f"https://127.0.0.1:{api_port}", node_address)

    etcd_log = workdir / "etcd.log"
    etcd = _spawn(
        [
            str(binaries["etcd"]),
            "--name=oneclick-dev",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=oneclick-dev=http://127.0.0.1:{peer_port}",
            f"--cert-file={pki / 'etcd.crt'}",
            f"--key-file={pki / 'etcd.key'}",
            f"--trusted-ca-file={pki / 'ca.crt'}",
            "--client-cert-auth",
            "--unsafe-no-fsync",  # a development store: speed over durability
            "--log-level=warn",
        ],
        etcd_log,
        detach,
    )
    plane = ControlPlane(
        kubeconfig=workdir / "admin.kubeconfig",
        server=f"https://127.0.0.1:{api_port}",
        workdir=workdir,
        node_address=node_address,
        etcd_pid=etcd.pid,
        etcd_binary=str(binaries["etcd"]),
        apiserver_binary=str(binaries["kube-apiserver"]),
    )
    try:
        _wait_healthy("etcd", f"{etcd_url}/health", _ssl_context(pki, "etcd"), etcd, etcd_log,
                      timeout)
        apiserver_log = workdir / "kube-apiserver.log"
        apiserver = _spawn(
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={pki / 'ca.crt'}",
                f"--etcd-certfile={pki / 'apiserver-etcd.crt'}",
                f"--etcd-keyfile={pki / 'apiserver-etcd.key'}",
                # Pods come from their bridge: beyond loopback, for a node only.
                f"--bind-address={'0.0.0.0' if node_address else '127.0.0.1'}",  # noqa: S104
                f"--advertise-address={node_address or '127.0.0.1'}",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                "--profiling=false",
                "--v=0",
            ],
            apiserver_log,
            detach,
        )
        plane.apiserver_pid = apiserver.pid
        kubeconfig.write_admin(plane.kubeconfig, plane.server, pki)
        plane.save()
        _wait_healthy(
            "kube-apiserver", f"{plane.server}/readyz", _ssl_context(pki, "admin"), apiserver,
            apiserver_log, timeout,
        )
        _start_controllers(plane, binaries, detach, scheduler, timeout)
    except BaseException:
        plane.stop()
        raise
    return plane


def _start_controllers(plane: ControlPlane, binaries: dict[str, Path], detach: bool,
                       scheduler: bool, timeout: float) -> None:
    """The controller manager (and the scheduler), both started before either is waited for."""
    assert plane.workdir is not None
    workdir, pki = plane.workdir, plane.workdir / "pki"

    def spawn(name: str, args: Callable[[Path, Path, int], list[str]]
              ) -> tuple[str, int, subprocess.Popen[bytes]]:
        port = free_port()
        return name, port, _spawn(args(binaries[name], pki, port), workdir / f"{name}.log",
                                  detach)

    waits = [spawn(controllers.CONTROLLER_MANAGER, controllers.controller_manager_args)]
    plane.controller_manager_pid = waits[0][2].pid
    plane.controller_manager_binary = str(binaries[controllers.CONTROLLER_MANAGER])
    if scheduler:
        waits.append(spawn(controllers.SCHEDULER, controllers.scheduler_args))
        plane.scheduler_pid = waits[1][2].pid
        plane.scheduler_binary = str(binaries[controllers.SCHEDULER])
    plane.save()
    for name, port, process in waits:
        _wait_healthy(name, f"https://127.0.0.1:{port}/healthz", _ssl_context(pki, "admin"),
                      process, workdir / f"{name}.log", timeout)


def readyz(kubeconfig_path: Path, timeout: float = 5.0) -> str:
    """The API server's `/readyz` answer through `kubectl`, which speaks every auth method."""
    binaries = ensure_binaries(log=False)
    try:
        result = subprocess.run(
            [str(binaries["kubectl"]), "--kubeconfig", str(kubeconfig_path),
             f"--request-timeout={timeout:.0f}s", "get", "--raw", "/readyz"],
            capture_output=True, text=True, timeout=timeout + 5, check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return result.stdout.strip() if result.returncode == 0 else result.stderr.strip()
