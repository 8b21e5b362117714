"""The control plane's binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, etcd) and helm, built from the Go module proxy, cached by version.

Each binary comes from a wrapper Go module of ours under `gomod/` (see the comments in its
go.mod for why a wrapper is needed). The cache key is the release plus a digest of go.mod and
go.sum, so a change of version or dependency rebuilds and an unchanged one is reused; a binary
added to a component later is built alone, beside the ones already cached.
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
from contextlib import AbstractContextManager, contextmanager
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
        """go.mod, go.sum and the module's own Go sources (the node's pause program)."""
        h = hashlib.sha256()
        for path in [self.dir / "go.mod", self.dir / "go.sum", *sorted(self.dir.rglob("*.go"))]:
            h.update(path.read_bytes())
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
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
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
# A node's kubelet and kube-proxy (same release as the control plane) and the pod sandbox's
# pause process: a module of its own, so adding them left the control plane's go.sum alone.
NODE = Component(
    module="node",
    release_module="k8s.io/kubernetes",
    packages={
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        "pause": "oneclick.dev/hack/node/pause",
    },
    version_flags=KUBERNETES.version_flags,
)
COMPONENTS = (KUBERNETES, ETCD, HELM, NODE)


def cache_root() -> Path:
    base = os.environ.get("OCC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get("OCC_CACHE_DIR") else root / "oneclick").resolve()


def component_dir(component: Component) -> Path:
    return cache_root() / "bin" / f"{component.module}-{component.release}-{component.digest}"


@contextmanager
def file_lock(directory: Path) -> Iterator[None]:
    """One build at a time in `directory` (parallel test workers, a CLI and CI on one
    machine), held through `directory/build.lock`."""
    directory.mkdir(parents=True, exist_ok=True)
    # (O_NOFOLLOW and no truncation: a link planted there opens nothing and empties nothing)
    lock = os.open(directory / "build.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # (closing releases the lock)


def _build_lock() -> AbstractContextManager[None]:
    return file_lock(cache_root())


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH: install Go 1.26 or newer "
            "(hack/bootstrap does) to build kube-apiserver and etcd"
        )
    return go


def _output_name(package: str) -> str:
    """The file `go build -o <dir>/` writes for a main package: its last path element."""
    return package.rstrip("/").rsplit("/", 1)[-1]


def _build(component: Component, target: Path, names: list[str], log: bool) -> None:
    """Build `names` into `target`, keeping whatever is there already. One `go build` for all
    of them, so the packages they share (most of Kubernetes) compile once."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    packages = [component.packages[name] for name in names]
    # One package: -o names the file. Several: -o names a folder, each file named by its package.
    output = str(tmp / names[0]) if len(names) == 1 else f"{tmp}{os.sep}"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly", GOTOOLCHAIN="auto")
    if log:
        print(f"building {', '.join(names)} {component.release} (cached afterwards) ...",
              file=sys.stderr)
    started = time.monotonic()
    result = subprocess.run(
        [_go(), "build", "-trimpath", "-ldflags", component.ldflags(), "-o", output, *packages],
        cwd=component.dir, env=env, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"go build {' '.join(packages)} in {component.dir} failed "
            f"(exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    if log:
        print(f"built {', '.join(names)} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    target.mkdir(parents=True, exist_ok=True)
    for name, package in zip(names, packages, strict=True):
        built = tmp / (name if len(names) == 1 else _output_name(package))
        built.rename(target / name)  # each file appears whole: a reader sees it or nothing
    shutil.rmtree(tmp, ignore_errors=True)


def _missing(component: Component) -> list[str]:
    target = component_dir(component)
    return [name for name in component.packages if not (target / name).is_file()]


def ensure_binaries(log: bool = True) -> dict[str, Path]:
    """Paths to the control plane's binaries and helm, building whatever the cache lacks."""
    paths: dict[str, Path] = {}
    for component in COMPONENTS:
        if _missing(component):  # checked again under the lock: another process may build it
            with _build_lock():
                if missing := _missing(component):
                    _build(component, component_dir(component), missing, log)
        paths.update({name: component_dir(component) / name for name in component.packages})
    return paths
