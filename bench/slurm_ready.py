"""Time to work: from `occ run` to the first job that runs on every compute node.

    python -m bench.slurm_ready                        # 2 and 8 compute nodes, 3 runs each
    python -m bench.slurm_ready --computes 2 --runs 5

Everything is real: the control plane, the controller with the local provider (each member in
its own namespaces, with its sshd, munged and slurmctld or slurmd), `occ run` of the base
cluster with its compute-nodes quantity set, then `srun -N<computes> hostname` on the head
node over SSH, tried again until it succeeds. The clock starts when `occ run` is started and
stops at the first srun that printed every compute node's name. Needs root (as the local
provider's namespaces do).

Prints, for each size: every run's time, the median, and how long `occ run` itself took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.harness import NAMESPACE, control_plane, prepare
from oneclick.controlplane.local import free_port
from oneclick.kits.kube import KubeClient

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start_controller(kubeconfig: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """occ-controller with the local provider; its broker listens where members reach it."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "OCC_NAMESPACE": NAMESPACE,
           "OCC_BROKER_LISTEN": "0.0.0.0", "OCC_BROKER_PORT": str(free_port()),  # noqa: S104
           "OCC_METRICS_PORT": "0", "OCC_HEALTH_PORT": "0",
           "OCC_LOCAL_STATE_DIR": str(workdir / "local")}
    log = workdir / "controller.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([str(BIN / "occ-controller")], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "context broker listening" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("occ-controller did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)
    return process


class User:
    """Someone with occ, an SSH key and a home of their own."""

    def __init__(self, home: Path, kubeconfig: Path) -> None:
        (home / ".ssh").mkdir(parents=True)
        self.key = home / ".ssh" / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}

    def occ(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "occ"), *args], capture_output=True, text=True,
                              env=self.env, timeout=900, check=False)

    def srun(self, address: str, nodes: int) -> list[str]:
        """`srun -N<nodes> hostname` on the head node: the names it printed, or [] if it
        failed."""
        done = subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", f"root@{address}", f"srun -N{nodes} hostname"],
            capture_output=True, text=True, timeout=120, check=False)
        return sorted(done.stdout.split()) if done.returncode == 0 else []


def head_address(state: Path, handle: str) -> str:
    """The head node's address, as the local provider gave it."""
    for record in state.glob("instances/*/instance.json"):
        instance = json.loads(record.read_text())
        if instance["member"] == f"{handle}-head-node-0":
            return str(instance["address"])
    raise RuntimeError(f"{handle} has no head node")


def one_run(user: User, state: Path, document: Path, computes: int,
            name: str) -> tuple[float, float]:
    """(seconds to the first job on every compute node, seconds `occ run` took)."""
    started = time.perf_counter()
    ran = user.occ("run", "--cluster", str(document), "--name", name, "--no-known-hosts",
                   "--ssh-key", str(user.key.with_suffix(".pub")))
    occ_run = time.perf_counter() - started
    if ran.returncode != 0:
        raise RuntimeError(f"occ run failed:\n{ran.stdout}{ran.stderr}")
    address = head_address(state, name)
    wanted = sorted(f"{name}-compute-nodes-{i}" for i in range(computes))
    while user.srun(address, computes) != wanted:
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"no job ran on every compute node of {name} within 600 s")
        time.sleep(0.2)
    took = time.perf_counter() - started
    done = user.occ("terminate", name)
    if done.returncode != 0:
        raise RuntimeError(f"occ terminate failed: {done.stderr}")
    return took, occ_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--computes", default="2,8",
                        help="compute node counts, comma-separated (default 2,8)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.slurm_ready needs root: the local provider's members get their own "
                 "namespaces")
    sample = yaml.safe_load((ROOT / "samples" / "base-cluster.yaml").read_text())
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-slurm-"))
    with control_plane() as plane:
        kubeconfig = plane.kubeconfig
        kube = KubeClient(kubeconfig=kubeconfig)
        asyncio.run(prepare(kube))
        asyncio.run(kube.aclose())
        controller = start_controller(kubeconfig, workdir)
        try:
            user = User(workdir / "home", kubeconfig)
            for computes in (int(c) for c in args.computes.split(",")):
                sample["spec"]["roles"][1]["quantity"] = computes
                document = workdir / f"base-cluster-{computes}.yaml"
                document.write_text(yaml.safe_dump(sample))
                times, occ_runs = [], []
                for run in range(args.runs):
                    took, occ_run = one_run(user, workdir / "local", document, computes,
                                           f"slurm-{computes}-{run}")
                    times.append(took)
                    occ_runs.append(occ_run)
                    print(f"1 head + {computes} compute nodes, run {run + 1}: first srun "
                          f"-N{computes} after {took:.1f} s (occ run returned after "
                          f"{occ_run:.1f} s)", flush=True)
                print(f"1 head + {computes} compute nodes: median {statistics.median(times):.1f}"
                      f" s to the first job on every compute node (occ run: median "
                      f"{statistics.median(occ_runs):.1f} s)", flush=True)
        finally:
            controller.terminate()
            controller.wait(30)


if __name__ == "__main__":
    main()
