"""The node's pod network and Services.

Pods sit on a bridge of their own (CNI `bridge` + `host-local`) in a subnet of their own, not
the local provider's 10.213.0.0/16. The host routes between the two: a pod reaches a local
member (an ssh machine, say) masqueraded as this host, and a member reaches a pod through a
NodePort on the host's address on its bridge. kube-proxy (iptables mode) makes Services work:
the `kubernetes` Service a pod's in-cluster configuration names, ClusterIPs, NodePorts.
Everything here is put back on stop: bridge, our chains, kube-proxy's chains, CNI's cache.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

NETWORK = "oneclick-node"
BRIDGE = "occpods0"
POD_SUBNET = "10.214.0.0/24"
CHAIN = "OCC-NODE"  # ours, in the nat and filter tables
CNI_CACHE = Path("/var/lib/cni")  # where libcni keeps what it attached (inside containerd)


def write_cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,  # one rule of ours instead of a chain per pod (see masquerade)
            "hairpinMode": True,  # a pod reaching itself through its Service
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)},
        }],
    }
    (conf_dir / "10-oneclick.conflist").write_text(json.dumps(config, indent=2) + "\n")


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True,
                          check=False)


def _must(*args: str) -> None:
    result = _iptables(*args)
    if result.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {result.stderr.strip()}")


_JUMPS = (("nat", "POSTROUTING"), ("filter", "FORWARD"))


def open_routes() -> None:
    """Pods' traffic leaves masqueraded as this host (members and other hosts answer to an
    address they know), and is forwarded even where FORWARD's policy drops."""
    close_routes()
    for table, _ in _JUMPS:
        _must("-t", table, "-N", CHAIN)
    _must("-t", "nat", "-A", CHAIN, "-s", POD_SUBNET, "!", "-d", POD_SUBNET, "-j", "MASQUERADE")
    _must("-t", "filter", "-A", CHAIN, "-s", POD_SUBNET, "-j", "ACCEPT")
    _must("-t", "filter", "-A", CHAIN, "-d", POD_SUBNET, "-j", "ACCEPT")
    for table, builtin in _JUMPS:
        _must("-t", table, "-I", builtin, "-m", "comment", "--comment", "oneclick node",
              "-j", CHAIN)


def close_routes() -> None:
    for table, builtin in _JUMPS:
        while _iptables("-t", table, "-D", builtin, "-m", "comment", "--comment",
                        "oneclick node", "-j", CHAIN).returncode == 0:
            pass
        _iptables("-t", table, "-F", CHAIN)
        _iptables("-t", table, "-X", CHAIN)


def remove_bridge() -> None:
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def forget_attachments() -> None:
    """libcni's cache of what it attached to the node's pods (gone with them)."""
    for path in (CNI_CACHE / "results").glob(f"{NETWORK}-*"):
        with contextlib.suppress(OSError):
            path.unlink()


# -- kube-proxy ----------------------------------------------------------------------------

def kube_proxy_config(kubeconfig: Path, name: str, healthz_port: int,
                      metrics_port: int) -> dict[str, Any]:
    """iptables mode; it leaves the kernel's conntrack settings and route_localnet alone
    (nothing here may change some of them, and the host is shared)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": name,
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "oomScoreAdj": 0,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def kube_proxy_cleanup(binary: Path) -> str:
    """kube-proxy's own removal of its chains, then whatever KUBE- chain it leaves (its
    localhost firewall, the kubelet's and its canaries): the machine's one node made them
    all. What kube-proxy said when it failed."""
    result = subprocess.run([str(binary), "--cleanup", "--proxy-mode=iptables"],
                            capture_output=True, text=True, timeout=60, check=False)
    for table in ("filter", "nat", "mangle"):
        rules = _iptables("-t", table, "-S").stdout.splitlines()
        chains = [line.split()[1] for line in rules
                  if line.startswith("-N KUBE-")]
        for line in rules:  # the jumps from built-in chains first
            words = shlex.split(line)  # (comments are quoted)
            if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in chains:
                _iptables("-t", table, "-D", *words[1:])
        for chain in chains:
            _iptables("-t", table, "-F", chain)
        for chain in chains:
            _iptables("-t", table, "-X", chain)
    return "" if result.returncode == 0 else result.stderr[-2000:]
