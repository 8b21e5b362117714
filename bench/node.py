"""The chart on a real node here, timed: the controller's image built from the Dockerfile,
the node brought up, `helm install --wait`, and from `helm install` to a Ready base cluster.

    python -m bench.node            # warm image (cached), then the rest
    python -m bench.node --cold     # also a cold image build: a fresh cache (base root
                                    # filesystem, podman storage): minutes

The base cluster runs on three machines of the local provider taken with the ssh provider
from the controller's pod, as tests/helm/test_node.py does (a second control plane with a
local controller makes the machines). Root only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from oneclick import controlplane
from oneclick.cli import devcontroller
from oneclick.controller.providers.local import network as local_network
from oneclick.controlplane import image
from oneclick.controlplane.binaries import ensure_binaries
from oneclick.controlplane.node import host
from oneclick.controlplane.node import start as start_node
from oneclick.controlplane.podman import Podman

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "oneclick-system"
NODE_PORT = 30843
# The owner readies each machine for the pool: our key a plain line of root's
# authorized_keys, nothing left of the launch that made the machine.
READY = """
set -e
for f in /etc/hosts /etc/ssh/ssh_known_hosts /etc/ssh/shosts.equiv /etc/hosts.equiv \
         /root/.shosts; do
  [ -f "$f" ] && sed -i '/^# BEGIN oneclick$/,/^# END oneclick$/d' "$f"
done
printf '%s\\n' "$1" > /root/.ssh/authorized_keys
rm -f /etc/ssh/sshd_config.d/50-oneclick.conf /etc/ssh/ssh_config.d/50-oneclick.conf
rm -rf /var/lib/oneclick/* /var/log/oneclick-agent.log
"""


def run(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ...: {result.stderr[-2000:]}")
    return result.stdout


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return run(str(ensure_binaries(log=False)["kubectl"]), "--kubeconfig", str(kubeconfig),
               *args, stdin=stdin)


def wait_phase(kubeconfig: Path, namespace: str, name: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = kubectl(kubeconfig, "get", "cl", name, "-n", namespace, "-o",
                        "jsonpath={.status.phase}")
        if phase in ("Ready", "Failed"):
            return phase
        time.sleep(0.5)
    return "timed out"


def image_cold() -> float:
    with tempfile.TemporaryDirectory(prefix="occ-bench-cache-") as cache:
        saved = os.environ.get("OCC_CACHE_DIR")
        os.environ["OCC_CACHE_DIR"] = cache
        try:
            started = time.monotonic()
            image.controller_image(log=False)
            return time.monotonic() - started
        finally:
            shutil.rmtree(Podman.cached().runroot, ignore_errors=True)
            if saved is None:
                os.environ.pop("OCC_CACHE_DIR")
            else:
                os.environ["OCC_CACHE_DIR"] = saved


@contextmanager
def machines(work: Path) -> Iterator[tuple[list[dict[str, Any]], Path]]:
    """Three running machines that trust a key of ours: (hosts, key)."""
    plane = controlplane.start(work / "machines-plane")
    try:
        devcontroller.start(plane)
        key = work / "id_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key))
        public = key.with_suffix(".pub").read_text().strip()
        kubectl(plane.kubeconfig, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": "clusters.oneclick.dev/v1alpha1", "kind": "ClusterLaunch",
            "metadata": {"name": "machines", "namespace": "default"},
            "spec": {"sshAuthorizedKeys": [public], "lifetime": "3h", "roles": [
                {"name": "machine", "image": "base-cluster", "quantity": 3}]}}))
        assert wait_phase(plane.kubeconfig, "default", "machines") == "Ready"
        listed = json.loads(kubectl(plane.kubeconfig, "get", "lm", "-n", "default", "-o",
                                    "json"))["items"]
        hosts = [{"address": m["status"]["addresses"][0],
                  "hostKeys": m["status"]["identity"]["sshHostKeys"]} for m in listed]
        known = work / "known_hosts"
        known.write_text("".join(f"{h['address']} {k}\n" for h in hosts for k in h["hostKeys"]))
        for h in hosts:
            run("ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known}", f"root@{h['address']}",
                f"sh -s -- '{public}'", stdin=READY)
        yield hosts, key
    finally:
        devcontroller.stop(plane)
        plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--cold", action="store_true", help="also time a cold image build")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start")
    if args.cold:
        print(f"image build, cold (base root filesystem, podman storage, pip): "
              f"{image_cold():.0f} s")
    started = time.monotonic()
    built = image.controller_image(log=False)
    print(f"image build, {'rebuilt' if built.built else 'warm (cached)'}: "
          f"{time.monotonic() - started:.1f} s")
    helm = str(ensure_binaries(log=False)["helm"])
    with tempfile.TemporaryDirectory(prefix="occ-bench-node-") as tmp:
        work = Path(tmp)
        with machines(work) as (hosts, key):
            started = time.monotonic()
            plane = controlplane.start(work / "plane", scheduler=True,
                                       node_address=host.node_address())
            plane_took = time.monotonic() - started
            try:
                started = time.monotonic()
                node = start_node(plane, work / "node")
                print(f"node bring-up (containerd, kube-proxy, kubelet to Ready and "
                      f"untainted): {time.monotonic() - started:.1f} s "
                      f"(its control plane before: {plane_took:.1f} s)")
                try:
                    started = time.monotonic()
                    node.import_image(built)
                    print(f"image import into the node: {time.monotonic() - started:.1f} s")
                    _install_and_launch(plane.kubeconfig, helm, hosts, key, work)
                finally:
                    node.stop()
            finally:
                plane.stop()


def _install_and_launch(kubeconfig: Path, helm: str, hosts: list[dict[str, Any]], key: Path,
                        work: Path) -> None:
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    kubectl(kubeconfig, "create", "secret", "generic", "lab-ssh", "-n", NAMESPACE,
            f"--from-file=id_ed25519={key}")
    values = work / "values.yaml"
    values.write_text(yaml.safe_dump({
        "image": {"pullPolicy": "Never"}, "defaultProvider": "lab",
        "providers": [{"name": "lab", "type": "ssh", "brokerHost": local_network.GATEWAY,
                       "user": "root", "privateKey": {"secret": "lab-ssh", "key": "id_ed25519"},
                       "agentCommand": str(Path(sys.executable).parent / "occ-agent"),
                       "hosts": hosts}],
        "broker": {"service": {"type": "NodePort", "nodePort": NODE_PORT,
                               "externalAddress": local_network.GATEWAY}}}))
    started = time.monotonic()
    run(helm, "install", "occ", str(ROOT / "charts" / "oneclick"), "-n", NAMESPACE,
        "--kubeconfig", str(kubeconfig), "-f", str(values), "--wait", "--timeout", "300s")
    installed = time.monotonic() - started
    print(f"helm install --wait (the controller's pod Available): {installed:.1f} s")
    document = yaml.safe_load((ROOT / "samples" / "base-cluster.yaml").read_text())
    document["metadata"]["namespace"] = "default"
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(document))
    phase = wait_phase(kubeconfig, "default", document["metadata"]["name"])
    print(f"helm install to a {phase} base cluster (3 ssh machines): "
          f"{time.monotonic() - started:.1f} s ({time.monotonic() - started - installed:.1f} s "
          f"after the install returned)")
    kubectl(kubeconfig, "delete", "cl", "--all", "-n", "default", "--timeout=300s")


if __name__ == "__main__":
    main()
