"""A real Kubernetes control plane for development, demos and tests.

Builds kube-apiserver, kubectl and etcd from the Go module proxy (cached by version), runs them
on loopback with certificates of their own, or uses a cluster the user points at instead; on
request, a node on this machine (controlplane.node) and the controller's image to run on it
(controlplane.image).
"""

from oneclick.controlplane.binaries import BuildError, ensure_binaries
from oneclick.controlplane.dev import default_workdir, down, ensure, existing, running, up, up_node
from oneclick.controlplane.local import ControlPlane, ControlPlaneError, readyz, start

__all__ = [
    "BuildError",
    "ControlPlane",
    "ControlPlaneError",
    "default_workdir",
    "down",
    "ensure",
    "ensure_binaries",
    "existing",
    "readyz",
    "running",
    "start",
    "up",
    "up_node",
]
