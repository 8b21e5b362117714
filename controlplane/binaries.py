"""kube-apiserver, kubectl, etcd and helm, built from the Go module proxy, cached by version.

Each binary comes from a wrapper Go module of ours under `gomod/` (see the comments in its
go.mod for why a wrapper is needed). The cache key is the release plus a digest of go.mod and
go.sum, so a change of version or dependency rebuilds and an unchanged one is reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GOMOD_DIR = Path(__file__).parent / "gomod"


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the toolchain's own words."""


@dataclass(frozen=True)
class Component:
    """One wrapper module and the binaries it builds."""

    module: str  # folder under gomod/
    release_module: str  # the module whose version names the release
    packages: dict[str, str]  # binary name -> Go package
    version_flags: tuple[str, ...] = ()  # -X flags; {version}, {major}, {minor} filled in

    @property
    def dir(self) -> Path:
        return GOMOD_DIR / self.module

    @property
    def release(self) -> str:
        gomod = (self.dir / "go.mod").read_text()
        pattern = rf"^\s*(?:require\s+)?{re.escape(self.release_module)} (v\S+)"
        match = re.search(pattern, gomod, re.M)
        if not match:
            raise BuildError(f"{self.dir / 'go.mod'}: no version for {self.release_module}")
        return match.group(1)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            h.update((self.dir / name).read_bytes())
        return h.hexdigest()[:12]

    def ldflags(self) -> str:
        version = self.release
        major, minor = version.lstrip("v").split(".")[:2]
        stamps = [f"-X {f.format(version=version, major=major, minor=minor)}"
                  for f in self.version_flags]
        return " ".join(["-s", "-w", *stamps])


KUBERNETES = Component(
    module="kube",
    release_module="k8s.io/kubernetes",
    packages={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    },
    version_flags=(
        "k8s.io/component-base/version.gitVersion={version}",
        "k8s.io/component-base/version.gitMajor={major}",
        "k8s.io/component-base/version.gitMinor={minor}",
        "k8s.io/component-base/version.gitTreeState=clean",
    ),
)
ETCD = Component(
    module="etcd",
    release_module="go.etcd.io/etcd/server/v3",
    packages={"etcd": "go.etcd.io/etcd/server/v3"},
)
HELM = Component(
    module="helm",
    release_module="helm.sh/helm/v3",
    packages={"helm": "helm.sh/helm/v3/cmd/helm"},
    version_flags=("helm.sh/helm/v3/internal/version.version={version}",),
)
COMPONENTS = (KUBERNETES, ETCD, HELM)


def cache_root() -> Path:
    base = os.environ.get("OCC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get("OCC_CACHE_DIR") else root / "oneclick").resolve()


def component_dir(component: Component) -> Path:
    return cache_root() / "bin" / f"{component.module}-{component.release}-{component.digest}"


@contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time per cache (parallel test workers, a CLI and CI on one machine)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH: install Go 1.26 or newer "
            "(hack/bootstrap does) to build kube-apiserver and etcd"
        )
    return go


def _build(component: Component, target: Path, log: bool) -> None:
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly", GOTOOLCHAIN="auto")
    for name, package in component.packages.items():
        if log:
            print(f"building {name} {component.release} (cached afterwards) ...", file=sys.stderr)
        started = time.monotonic()
        result = subprocess.run(
            [_go(), "build", "-trimpath", "-ldflags", component.ldflags(),
             "-o", str(tmp / name), package],
            cwd=component.dir, env=env, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise BuildError(
                f"go build {package} in {component.dir} failed "
                f"(exit {result.returncode}):\n{result.stderr[-4000:]}"
            )
        if log:
            print(f"built {name} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    tmp.rename(target)


def ensure_binaries(log: bool = True) -> dict[str, Path]:
    """Paths to kube-apiserver, kubectl, etcd and helm, building whatever the cache lacks."""
    paths: dict[str, Path] = {}
    with _build_lock():
        for component in COMPONENTS:
            target = component_dir(component)
            if not all((target / name).is_file() for name in component.packages):
                shutil.rmtree(target, ignore_errors=True)
                _build(component, target, log)
            paths.update({name: target / name for name in component.packages})
    return paths
