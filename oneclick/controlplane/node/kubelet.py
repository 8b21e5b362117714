"""The kubelet and kube-proxy: their credentials, the kubelet's configuration, its rights.

Each signs in with a client certificate of the control plane's CA, as in a real cluster:
the kubelet as `system:node:<name>` in `system:nodes`, kube-proxy as `system:kube-proxy`
(which the API server's built-in RBAC binds to `system:node-proxier`). The API server runs
RBAC alone (no Node authorizer), so the node's user is bound to the `system:node` ClusterRole.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from oneclick.controlplane import kubeconfig
from oneclick.controlplane.node.host import CGROUP_ROOT
from oneclick.kits.pki import CertificateAuthority, KeyPair

KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"


def write_credentials(pki: Path, ca_dir: Path, server: str, name: str) -> None:
    """`kubelet.kubeconfig` and `kube-proxy.kubeconfig` in `pki`, and the CA's certificate
    (the kubelet checks the API server's clients against it)."""
    pki.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.load(KeyPair((ca_dir / "ca.crt").read_bytes(),
                                           (ca_dir / "ca.key").read_bytes()))
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    for component, user, groups in ((KUBELET, f"system:node:{name}", ("system:nodes",)),
                                     (KUBE_PROXY, "system:kube-proxy", ())):
        pair = ca.issue(user, organizations=groups, client=True)
        kubeconfig.write(pki / f"{component}.kubeconfig", server, ca.cert_pem, pair.cert_pem,
                         pair.key_pem, user=user)


def node_role_binding(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"oneclick:node:{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": f"system:node:{name}"}],
    }


def bind_node(kubectl: Path, admin: Path, name: str) -> None:
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(admin), "apply", "-f", "-"],
        input=json.dumps(node_role_binding(name)), capture_output=True, text=True, timeout=60,
        check=False)
    if result.returncode != 0:
        raise RuntimeError(f"binding the node's user to system:node: {result.stderr.strip()}")


def config(*, pki: Path, socket: Path, port: int, healthz_port: int,
           pod_logs: Path) -> dict[str, Any]:
    """What this machine kind needs: cgroupfs on cgroup v1, no swap check, no local storage
    isolation, no iptables utility chains, and no oom_score_adj (CAP_SYS_RESOURCE is missing).
    Images are never collected (they were imported: nothing could pull them again)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The API server dials it for logs, exec and port-forward, by the node's host name
        # (which may resolve to loopback) or its address.
        "address": "0.0.0.0",  # noqa: S104
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        "makeIPTablesUtilChains": False,
        "oomScoreAdj": 0,
        "podLogsDir": str(pod_logs),
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The disk and memory are shared with everything else here: evict only near the end.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
    }
