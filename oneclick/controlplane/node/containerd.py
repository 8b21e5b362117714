"""containerd (Debian's, with runc) as the node's container runtime: a daemon of the node's own
(its socket, state and store), configured as this machine kind needs it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "k8s.io"  # where the CRI plugin keeps the node's images and containers


@dataclass(frozen=True)
class Paths:
    root: Path  # images and snapshots (the node's data folder)
    state: Path  # sockets, task state, network namespaces (under /run)
    cni_conf_dir: Path

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"  # (its path must fit a socket address)

    @property
    def config(self) -> Path:
        return self.root.parent / "containerd.toml"


def config(paths: Paths, sandbox_image: str) -> str:
    """The settings that matter here: cgroupfs (no systemd), `restrict_oom_score_adj` (nothing
    may lower oom_score_adj: without it every sandbox fails with "can't get final child's PID
    from pipe"), no AppArmor, overlayfs, a local sandbox image (no registry), network
    namespaces under the state folder (so stopping finds them all)."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    cni_bin = "/usr/lib/cni"
    return f"""\
version = 2
root = "{paths.root}"
state = "{paths.state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{paths.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{paths.state / 'runc'}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{paths.cni_conf_dir}"
"""


def ctr(socket: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(socket), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_ready(socket: Path, timeout: float, alive: Callable[[], bool]) -> str:
    """Wait until containerd answers on its socket: "" then, else the last error."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline and alive():
        if socket.exists():
            answer = ctr(socket, "version", timeout=10)
            if answer.returncode == 0:
                return ""
            last = answer.stderr.strip()
        time.sleep(0.2)
    return last


def import_image(socket: Path, archive: Path) -> None:
    """An image archive into the node's store, where the kubelet finds it without a pull."""
    result = ctr(socket, "images", "import", str(archive))
    if result.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {result.stderr.strip()}")


def kill_tasks(socket: Path) -> None:
    """Every container's task killed and deleted, so each shim ends on its own."""
    listed = ctr(socket, "tasks", "list", "--quiet", timeout=30)
    tasks = listed.stdout.split() if listed.returncode == 0 else []
    for task in tasks:
        ctr(socket, "tasks", "kill", "--all", "--signal", "SIGKILL", task, timeout=30)
    for task in tasks:
        ctr(socket, "tasks", "delete", "--force", task, timeout=30)
