"""`occ dev up --node` and `occ dev down`, as a developer runs them before `helm install`:
a control plane with a node on this machine, the controller's image on it, then nothing left.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from oneclick.controlplane import image
from tests.conftest import kubectl
from tests.controller.launches import wait_until
from tests.helm.machine import machine_leftovers


def occ(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["occ", *args], capture_output=True, text=True, env=env, timeout=900,
                          check=False)


def test_occ_dev_up_node_runs_the_controllers_image_and_down_clears_the_machine(
        binaries: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path))
    env.pop("KUBECONFIG", None)
    workdir = tmp_path / "oneclick" / "dev"
    up = occ("dev", "up", "--node", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "started node " in up.stderr
        kubeconfig = Path(up.stdout.strip())
        [node] = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert ready["Ready"] == "True" and not node["spec"].get("taints")
        # No controller on the host: the chart runs it in a pod, and two would fight.
        assert not (workdir / "controller.json").exists()

        # The controller's image is on the node, no registry involved: a pod runs it.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "occ-version"},
               "spec": {"restartPolicy": "Never", "containers": [{
                   "name": "occ", "image": f"oneclick/occ-controller:{image.version()}",
                   "imagePullPolicy": "Never", "args": ["--help"]}]}}
        kubectl(kubeconfig, "apply", "-n", "default", "-f", "-", stdin=json.dumps(pod))
        wait_until(lambda: kubectl(kubeconfig, "get", "pod", "occ-version", "-n", "default",
                                   "-o", "jsonpath={.status.phase}").stdout == "Succeeded",
                   timeout=120, what="the image's pod to run")
        said = kubectl(kubeconfig, "logs", "occ-version", "-n", "default").stdout
        assert "usage: occ-controller" in said

        again = occ("dev", "up", "--node", env=env)
        assert again.returncode == 0 and "reusing node " in again.stderr, again.stderr
    finally:
        down = occ("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not workdir.exists()
    assert machine_leftovers(tmp_path) == []
