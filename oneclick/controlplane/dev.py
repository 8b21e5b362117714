"""The developer's control plane: one per user, started once and reused by every command."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from oneclick.controlplane import image, node
from oneclick.controlplane.local import ControlPlane, ControlPlaneError, readyz, start
from oneclick.controlplane.node import host


def default_workdir() -> Path:
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "oneclick" / "dev"


def running(workdir: Path | None = None) -> ControlPlane | None:
    """The control plane `up` started earlier, if it is still alive and ready."""
    plane = ControlPlane.load(workdir or default_workdir())
    if plane is not None and plane.alive() and plane.ready():
        return plane
    return None


def up(workdir: Path | None = None, *, with_node: bool = False) -> tuple[ControlPlane, bool]:
    """Reuse the running control plane or start a new one; says which it did (True: started).
    `with_node`: one whose pods can reach its API server, and the scheduler (see up_node)."""
    workdir = workdir or default_workdir()
    plane = running(workdir)
    if plane is not None:
        if with_node and plane.node_address is None:
            raise ControlPlaneError("the running control plane was started without a node "
                                    "(its pods could not reach it): `occ dev down`, then "
                                    "`occ dev up --node`")
        return plane, False
    stale = ControlPlane.load(workdir)
    if stale is not None:  # half-dead leftovers of an earlier run: end them, start clean
        _stop_node(workdir)
        stale.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    if not with_node:
        return start(workdir, detach=True), True
    try:
        address = host.node_address()
    except host.HostError as error:
        raise ControlPlaneError(str(error)) from error
    return start(workdir, detach=True, scheduler=True, node_address=address), True


def node_workdir(workdir: Path | None = None) -> Path:
    return (workdir or default_workdir()) / "node"


def up_node(plane: ControlPlane) -> tuple[node.Node, bool]:
    """This machine's node for the development control plane, with the controller's image
    built here (or found in the cache) and imported; reused when it runs already."""
    assert plane.workdir is not None
    workdir = plane.workdir / "node"
    found = node.Node.load(workdir / node.node.STATE_FILE)
    if found is not None and found.alive():
        return found, False
    built = image.controller_image()
    return node.start(plane, workdir, detach=True, images=(built,)), True


def _stop_node(workdir: Path) -> None:
    found = node.Node.load(node_workdir(workdir) / node.node.STATE_FILE)
    if found is not None:
        found.stop()


def down(workdir: Path | None = None) -> bool:
    """Stop the control plane `up` started; False when none was running."""
    workdir = workdir or default_workdir()
    plane = ControlPlane.load(workdir)
    if plane is None:
        return False
    try:
        _stop_node(workdir)  # (its pods first, while the API server still answers)
    finally:
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
