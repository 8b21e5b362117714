"""A node of the development control plane on this machine: containerd (runc, the CNI bridge),
kube-proxy and a kubelet registered under this machine's host name.

One node per machine: kube-proxy owns the host's Service rules, the runtime's sockets, task
state and network namespaces live under /run/oneclick/node, the kubelet's root (pods' volumes)
under /var/lib/oneclick-node. `start()`
returns once the node is Ready and untainted; `Node.stop()` ends every pod (containerd's
shims and the containers' processes too) and puts the machine back as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from oneclick.controlplane import image
from oneclick.controlplane.binaries import ensure_binaries
from oneclick.controlplane.local import (
    ControlPlane,
    ControlPlaneError,
    _is_our_process,
    _spawn,
    _tail,
    _terminate,
    free_port,
)
from oneclick.controlplane.node import containerd, host, kubelet, network

RUN_DIR = Path("/run/oneclick/node")
RECORD = RUN_DIR / "node.json"  # the machine's node, whoever started it
SOCKET = RUN_DIR / "containerd" / "containerd.sock"
# The kubelet's root, short for the sockets it makes there (a path must fit 108 bytes); not
# under /var/lib/oneclick, which is the agent's on a member.
NODE_DATA = Path("/var/lib/oneclick-node")
KUBELET_ROOT = NODE_DATA / "kubelet"
STATE_FILE = "node.json"
READY_TIMEOUT = 120.0
# Debian packages the node runs on (hack/bootstrap installs them).
TOOLS = {"containerd": "containerd", "ctr": "containerd", "runc": "runc",
         "iptables": "iptables", "conntrack": "conntrack"}
CNI_PLUGINS = Path("/usr/lib/cni")


class NodeError(ControlPlaneError):
    """The node could not start or stop cleanly; the message says what to look at."""


@dataclass
class Node:
    name: str
    address: str
    workdir: Path
    admin: Path  # the control plane's admin kubeconfig
    containerd_pid: int | None = None
    containerd_binary: str | None = None
    kubelet_pid: int | None = None
    kubelet_binary: str | None = None
    kube_proxy_pid: int | None = None
    kube_proxy_binary: str | None = None
    forwarding_before: str | None = None  # net.ipv4.ip_forward as we found it

    socket = SOCKET

    @property
    def pod_logs(self) -> Path:
        return self.workdir / "pod-logs"

    def _processes(self) -> list[tuple[int | None, str | None]]:
        """In the order they stop: the kubelet first, so it restarts nothing."""
        return [(self.kubelet_pid, self.kubelet_binary),
                (self.kube_proxy_pid, self.kube_proxy_binary),
                (self.containerd_pid, self.containerd_binary)]

    def save(self) -> None:
        state = json.dumps({k: str(v) if isinstance(v, Path) else v
                            for k, v in asdict(self).items()}, indent=2) + "\n"
        (self.workdir / STATE_FILE).write_text(state)
        RECORD.write_text(state)

    @classmethod
    def load(cls, path: Path) -> Node | None:
        try:
            state = json.loads(path.read_text())
            return cls(**{**state, "workdir": Path(state["workdir"]),
                          "admin": Path(state["admin"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def alive(self) -> bool:
        return all(_is_our_process(pid, binary) for pid, binary in self._processes())

    def died(self) -> bool:
        """A process it started is gone."""
        return any(pid is not None and not _is_our_process(pid, binary)
                   for pid, binary in self._processes())

    def import_image(self, built: image.Image) -> None:
        try:
            containerd.import_image(self.socket, built.archive)
        except RuntimeError as error:
            raise NodeError(str(error)) from error

    def stop(self, timeout: float = 20.0) -> None:
        """End the kubelet and kube-proxy, every pod and containerd; then remove what they
        left on the machine: mounts, network namespaces, cgroups, iptables chains, the pod
        bridge. Raises if something could not be removed (and says what)."""
        kubelet_pid, kubelet_binary = self._processes()[0]
        if _is_our_process(kubelet_pid, kubelet_binary):
            _terminate(kubelet_pid or 0, timeout)
        if _is_our_process(self.kube_proxy_pid, self.kube_proxy_binary):
            _terminate(self.kube_proxy_pid or 0, timeout)
        if _is_our_process(self.containerd_pid, self.containerd_binary):
            containerd.kill_tasks(self.socket)
            _terminate(self.containerd_pid or 0, timeout)
        problems = _clear_machine(self.kube_proxy_binary, self.socket, self.forwarding_before)
        _forget_logs(self.pod_logs)
        host.unmount_under(self.workdir)  # (the containers' root filesystems)
        left = host.mounts_under(self.workdir)
        if left:
            problems.append(f"still mounted: {', '.join(left)}")
        else:
            for data in ("containerd", "pod-logs", "cni"):
                shutil.rmtree(self.workdir / data, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()
        if problems:
            raise NodeError("the node stopped, but: " + "; ".join(problems))


def _clear_machine(kube_proxy: str | None, socket: Path, forwarding: str | None) -> list[str]:
    """Everything a node (this one, or one that crashed) leaves outside its own folder."""
    problems = []
    for _ in range(50):  # shims, and whatever a pod started, wherever it went
        leftovers = host.processes_with(str(socket)) | host.cgroup_pids()
        leftovers.discard(os.getpid())
        if not leftovers:
            break
        host.kill(leftovers)
        time.sleep(0.1)
    else:
        problems.append(f"processes would not end: {sorted(leftovers)}")
    for folder in (RUN_DIR, NODE_DATA):  # network namespaces, pods' volumes, ...
        host.unmount_under(folder)
        if host.mounts_under(folder):
            problems.append(f"still mounted: {', '.join(host.mounts_under(folder))}")
        else:  # (never remove through a mount: a host path a pod mounted lives there)
            shutil.rmtree(folder, ignore_errors=True)
    if kube_proxy and Path(kube_proxy).exists():
        said = network.kube_proxy_cleanup(Path(kube_proxy))
        if said:
            problems.append(f"kube-proxy --cleanup: {said}")
    network.close_routes()
    network.remove_bridge()
    network.forget_attachments()
    host.remove_cgroup_root()
    if forwarding is not None:
        host.sysctl("net.ipv4.ip_forward", forwarding)
    return problems


def _forget_logs(pod_logs: Path) -> None:
    """The kubelet links each container's log from /var/log/containers."""
    with contextlib.suppress(OSError):
        for link in Path("/var/log/containers").iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(pod_logs) + "/"):
                    link.unlink()


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise NodeError("a node runs as root (containers, network namespaces, iptables)")
    missing = sorted({package for tool, package in TOOLS.items()
                      if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()})
    if not (CNI_PLUGINS / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise NodeError(f"Debian packages missing for a node: {', '.join(missing)} "
                        "(hack/bootstrap installs them)")


def _take_machine() -> None:
    """The machine's one node is ours to start; one that died is cleared away first."""
    running = Node.load(RECORD)
    if running is not None and running.alive():
        raise NodeError(f"a node is already running on this machine (kubelet pid "
                        f"{running.kubelet_pid}, files in {running.workdir}); one per machine: "
                        f"stop it first (`occ dev down` for the development one)")
    if running is not None:
        running.stop()
    else:
        _clear_machine(None, SOCKET, None)


def _kubectl_json(node: Node, *args: str) -> dict[str, Any] | None:
    result = subprocess.run(
        [str(ensure_binaries(log=False)["kubectl"]), "--kubeconfig", str(node.admin), *args,
         "-o", "json"], capture_output=True, text=True, timeout=30, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _ready(node: Node) -> bool:
    found = _kubectl_json(node, "get", "node", node.name)
    if found is None:
        return False
    conditions = {c["type"]: c["status"] for c in found.get("status", {}).get("conditions", [])}
    taints = found.get("spec", {}).get("taints") or []
    return conditions.get("Ready") == "True" and not taints


def _wait(what: str, check: Any, node: Node, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.died():
            break
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
            if check():
                return
        time.sleep(0.25)
    tails = "\n".join(f"-- {log} ends with:\n{_tail(log)}" for log in logs)
    raise NodeError(f"{what} within {timeout:.0f}s (or a process of the node died):\n{tails}")


def start(plane: ControlPlane, workdir: Path, *, detach: bool = False,
          images: tuple[image.Image, ...] = (), timeout: float = READY_TIMEOUT) -> Node:
    """Start this machine's node for `plane` (started with a node address) and import
    `images` into it; return once it is Ready and untainted."""
    if plane.node_address is None:
        raise NodeError("the control plane was started without a node address: pods could "
                        "not reach its API server (controlplane.start(..., node_address=...))")
    _check_machine()
    try:
        name = host.node_name()
    except host.HostError as error:
        raise NodeError(str(error)) from error
    binaries = ensure_binaries()
    pause = image.pause_image()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    node = Node(name=name, address=plane.node_address, workdir=workdir, admin=plane.kubeconfig)
    with _machine_lock():
        _take_machine()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        node.save()
    try:
        _bring_up(node, plane, binaries, pause, images, detach, timeout)
    except BaseException:
        with contextlib.suppress(NodeError):
            node.stop()
        raise
    return node


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Two starts at once see each other's record (a test session and a developer, say)."""
    RUN_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR.parent / "node.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _bring_up(node: Node, plane: ControlPlane, binaries: dict[str, Path], pause: image.Image,
              images: tuple[image.Image, ...], detach: bool, timeout: float) -> None:
    workdir = node.workdir
    pki = workdir / "pki"
    assert plane.workdir is not None
    kubelet.write_credentials(pki, plane.workdir / "pki", plane.server, node.name)
    kubelet.bind_node(binaries["kubectl"], plane.kubeconfig, node.name)
    host.make_cgroup_root()
    paths = containerd.Paths(root=workdir / "containerd", state=RUN_DIR / "containerd",
                             cni_conf_dir=workdir / "cni" / "net.d")
    network.write_cni_config(paths.cni_conf_dir, workdir / "cni" / "ipam")
    network.open_routes()
    node.forwarding_before = host.sysctl("net.ipv4.ip_forward", "1")
    node.save()

    paths.config.write_text(containerd.config(paths, pause.reference))
    containerd_bin = shutil.which("containerd") or "/usr/bin/containerd"
    log = workdir / "containerd.log"
    process = _spawn([containerd_bin, "--config", str(paths.config)], log, detach)
    node.containerd_pid, node.containerd_binary = process.pid, os.path.realpath(containerd_bin)
    node.save()
    said = containerd.wait_ready(node.socket, timeout, lambda: process.poll() is None)
    if said:
        raise NodeError(f"containerd did not answer on {node.socket}: {said}\n{_tail(log)}")
    for built in (pause, *images):
        node.import_image(built)

    node.pod_logs.mkdir(parents=True, exist_ok=True)
    KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
    config = workdir / "kubelet.yaml"
    config.write_text(yaml.safe_dump(kubelet.config(
        pki=pki, socket=node.socket, port=free_port(), healthz_port=free_port(),
        pod_logs=node.pod_logs)))
    logs = [workdir / "kubelet.log", workdir / "containerd.log"]
    process = _spawn([str(binaries["kubelet"]), f"--config={config}",
                      f"--kubeconfig={pki / 'kubelet.kubeconfig'}",
                      f"--hostname-override={node.name}", f"--node-ip={node.address}",
                      f"--root-dir={KUBELET_ROOT}", f"--cert-dir={pki / 'kubelet'}",
                      "--v=0"], logs[0], detach)
    node.kubelet_pid, node.kubelet_binary = process.pid, str(binaries["kubelet"])
    node.save()
    _wait("the kubelet did not register the node",
          lambda: _kubectl_json(node, "get", "node", node.name) is not None, node, timeout, logs)

    healthz = free_port()
    proxy_config = workdir / "kube-proxy.yaml"
    proxy_config.write_text(yaml.safe_dump(network.kube_proxy_config(
        pki / "kube-proxy.kubeconfig", node.name, healthz, free_port())))
    logs.append(workdir / "kube-proxy.log")
    process = _spawn([str(binaries["kube-proxy"]), f"--config={proxy_config}", "--v=0"],
                     logs[-1], detach)
    node.kube_proxy_pid, node.kube_proxy_binary = process.pid, str(binaries["kube-proxy"])
    node.save()
    _wait("kube-proxy did not become healthy",
          lambda: httpx.get(f"http://127.0.0.1:{healthz}/healthz", timeout=2).status_code == 200,
          node, timeout, logs)
    _wait("the node did not become Ready and untainted", lambda: _ready(node), node, timeout,
          logs)
