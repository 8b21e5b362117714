"""The developer's control plane: one per user, started once and reused by every command."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from controlplane.local import ControlPlane, ControlPlaneError, readyz, start


def default_workdir() -> Path:
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "oneclick" / "dev"


def running(workdir: Path | None = None) -> ControlPlane | None:
    """The control plane `up` started earlier, if it is still alive and ready."""
    plane = ControlPlane.load(workdir or default_workdir())
    if plane is not None and plane.alive() and plane.ready():
        return plane
    return None


def up(workdir: Path | None = None) -> tuple[ControlPlane, bool]:
    """Reuse the running control plane or start a new one; says which it did (True: started)."""
    workdir = workdir or default_workdir()
    plane = running(workdir)
    if plane is not None:
        return plane, False
    stale = ControlPlane.load(workdir)
    if stale is not None:  # half-dead leftovers of an earlier run: end them, start clean
        stale.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return start(workdir, detach=True), True


def down(workdir: Path | None = None) -> bool:
    """Stop the control plane `up` started; False when none was running."""
    workdir = workdir or default_workdir()
    plane = ControlPlane.load(workdir)
    if plane is None:
        return False
    plane.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return True


def existing(kubeconfig: Path) -> ControlPlane:
    """A cluster the user pointed at: used as it is, never started or stopped by us."""
    if not kubeconfig.is_file():
        raise ControlPlaneError(f"{kubeconfig}: no such kubeconfig file")
    answer = readyz(kubeconfig)
    if answer != "ok":
        raise ControlPlaneError(f"the cluster of {kubeconfig} is not ready: {answer}")
    return ControlPlane(kubeconfig=kubeconfig, server="(from kubeconfig)")


def ensure(kubeconfig: Path | None = None) -> ControlPlane:
    """The cluster to work against: the one given explicitly, else the embedded one."""
    explicit = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG")
                              else None)
    if explicit is not None:
        return existing(explicit)
    plane, _ = up()
    return plane
