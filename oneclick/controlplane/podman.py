"""Rootful podman as it works on this machine kind, for building images with no registry.

runc (crun fails here), cgroupfs (no systemd), vfs storage (no overlay inside overlay), and no
default ulimits (nothing here may raise RLIMIT_NOFILE). The storage lives in the cache, so the
base image is kept between builds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oneclick.controlplane.binaries import cache_root

CONTAINERS_CONF = """\
# Written by oneclick's image build (oneclick/controlplane/podman.py).
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its own words."""


@dataclass(frozen=True)
class Podman:
    root: Path  # image storage: the build's cache
    runroot: Path

    @classmethod
    def cached(cls) -> Podman:
        """The cache's podman (each cache its own run root: two never share a lock)."""
        root = cache_root() / "podman"
        key = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        return cls(root=root, runroot=Path("/run/oneclick/podman") / key)

    @property
    def conf(self) -> Path:
        return self.root / "containers.conf"

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        podman = shutil.which("podman")
        if podman is None:
            raise PodmanError("podman is not installed (hack/bootstrap installs it)")
        return [podman, "--root", str(self.root / "storage"), "--runroot", str(self.runroot),
                "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                *args]

    def run(self, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`podman ARGS`; its output appended to `log` when given. Raises on failure."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.conf.exists() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)
        env = {"CONTAINERS_CONF": str(self.conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(self.root)}
        if log is not None:
            with open(log, "a") as out:
                out.write(f"$ podman {' '.join(args)}\n")
                out.flush()
                result = subprocess.run(self._argv(args), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, text=True, check=False)
            output = _tail(log)
        else:
            result = subprocess.run(self._argv(args), env=env, capture_output=True, text=True,
                                    check=False)
            output = (result.stdout + result.stderr)[-4000:]
        if result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} failed (exit {result.returncode}):\n"
                              f"{output}")
        return result

    def exists(self, reference: str) -> bool:
        try:
            self.run("image", "exists", reference)
        except PodmanError:
            return False
        return True


def _tail(path: Path, size: int = 4000) -> str:
    return path.read_text(errors="replace")[-size:]
