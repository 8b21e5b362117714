"""A real Kubernetes node for the development control plane, on this machine: containerd with
runc and the CNI bridge, kube-proxy, and a kubelet with node credentials of its own."""

from oneclick.controlplane.node.node import Node, NodeError, start

__all__ = ["Node", "NodeError", "start"]
