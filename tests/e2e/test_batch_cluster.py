"""The quick start's cluster runs work: Slurm configured only from the context (slurm.conf on
the head node lists the compute nodes the context names), a munge key the controller generated
for this launch and gave only to the roles that require it, /home shared from the head node,
jobs run as `jobrun`, who reaches the head node host-based like root.

One launch for the whole story (it is what a user has after `occ run`): a head node, two
compute nodes and a `monitor` member of the same image that requires no munge key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import kubectl
from tests.controller.launches import (
    create,
    get,
    live_instances,
    members,
    sample,
    wait_for_phase,
    wait_until,
)
from tests.controller_process import ControllerProcess

DAEMONS = ("slurmctld", "slurmd", "slurmstepd", "munged", "sshfs")


@dataclass
class Cluster:
    name: str
    namespace: str
    key: Path
    kubeconfig: Path
    state: Path

    def member(self, member: str) -> dict[str, str]:
        """The member's local instance record (its address, its host name)."""
        return dict(live_instances(self.state, self.namespace)[f"{self.name}-{member}"])

    def ssh(self, member: str, command: str, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        """`command` as root on the member, logged in with the user's key."""
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", f"root@{self.member(member)['address']}", command],
            capture_output=True, text=True, timeout=timeout, check=False)

    def run(self, member: str, command: str, timeout: float = 120) -> str:
        done = self.ssh(member, command, timeout)
        assert done.returncode == 0, f"{member}: {command}: {done.stdout}{done.stderr}"
        return done.stdout

    def host(self, member: str) -> str:
        return f"{self.name}-{member}"

    def generated(self) -> dict[str, str]:
        """The launch's Secret of generated data, as the API server keeps it."""
        launch = get(self.kubeconfig, self.namespace, "cl", self.name)
        assert launch is not None
        uid = launch["metadata"]["uid"]
        secret = get(self.kubeconfig, self.namespace, "secret", f"oneclick-generated-{uid}")
        assert secret is not None
        assert secret["type"] == "clusters.oneclick.dev/generated"
        [owner] = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ClusterLaunch", uid, True)
        return dict(secret["data"])


def daemons_of(launch: str) -> list[tuple[str, str]]:
    """(command, member host name) of every batch daemon on this machine that belongs to a
    member of `launch` (a process's view of /etc/hostname is its member's)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            if command not in DAEMONS or Path(f"/proc/{pid}/stat").read_text().split(
                    ")")[-1].split()[0] == "Z":
                continue
            hostname = Path(f"/proc/{pid}/root/etc/hostname").read_text().strip()
        except OSError:
            continue  # (gone meanwhile)
        if hostname.startswith(f"{launch}-"):
            found.append((command, hostname))
    return sorted(found)


def agent_logs(state: Path, launch: str) -> str:
    """The end of every agent's log of the launch, from the members' disks: why it is stuck."""
    logs = []
    for record in state.glob("instances/*/instance.json"):
        member = json.loads(record.read_text())["member"]
        if member.startswith(f"{launch}-"):
            log = record.parent / "root" / "var" / "log" / "oneclick-agent.log"
            tail = log.read_text().splitlines()[-15:] if log.exists() else ["(no log)"]
            logs.append(f"== {member}\n" + "\n".join(tail))
    return "\n".join(logs)


def sinfo(cluster: Cluster) -> dict[str, str]:
    """Node name -> state, as the head node's sinfo says."""
    out = cluster.run("head-node-0", "sinfo --noheader --Node --format '%N %T'")
    return dict(line.split() for line in out.splitlines())


def sinfo_while_restarting(cluster: Cluster) -> dict[str, str] | None:
    """As `sinfo`, or None while slurmctld restarts and cannot answer."""
    done = cluster.ssh("head-node-0", "sinfo --noheader --Node --format '%N %T'", 60)
    return dict(line.split() for line in done.stdout.splitlines()) if (
        done.returncode == 0) else None


@pytest.fixture(scope="module")
def cluster(controller: ControllerProcess, kubeconfig: Path, local_state: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("batch")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    namespace = "batch-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", namespace)
    document = sample("base-cluster.yaml",
                      sshAuthorizedKeys=[key.with_suffix(".pub").read_text().strip()])
    document["metadata"] = {"generateName": "batch-"}
    # A member of the same image whose role requires no munge key.
    document["spec"]["roles"].append({"name": "monitor", "image": "base-cluster"})
    name = create(kubeconfig, namespace, document)
    try:
        try:
            launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=240)
            assert launch["status"]["phase"] == "Ready", launch["status"]
        except AssertionError as error:
            raise AssertionError(f"{error}\n{agent_logs(local_state, name)}") from None
        yield Cluster(name, namespace, key, kubeconfig, local_state)
    finally:
        kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--ignore-not-found",
                "--timeout=120s")
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


def test_sinfo_lists_both_compute_nodes_idle_and_srun_runs_on_both(cluster: Cluster) -> None:
    assert sinfo(cluster) == {cluster.host("compute-nodes-0"): "idle",
                              cluster.host("compute-nodes-1"): "idle"}
    ran = cluster.run("head-node-0", "srun -N2 hostname")
    assert sorted(ran.split()) == [cluster.host("compute-nodes-0"),
                                   cluster.host("compute-nodes-1")]
    # Every line of slurm.conf about nodes came from the context: names, addresses, CPUs.
    conf = cluster.run("head-node-0", "cat /etc/slurm/slurm.conf")
    head = cluster.member("head-node-0")
    assert f"SlurmctldHost={head['hostname']}({head['address']})" in conf.splitlines()
    for compute in ("compute-nodes-0", "compute-nodes-1"):
        assert (f"NodeName={cluster.host(compute)} NodeAddr={cluster.member(compute)['address']}"
                f" CPUs={os.cpu_count()} State=UNKNOWN") in conf.splitlines()
    # A compute node has no slurm.conf of its own: its slurmd took the head node's.
    assert cluster.ssh("compute-nodes-0", "test -e /etc/slurm/slurm.conf").returncode == 1


def test_a_batch_jobs_output_appears_in_the_shared_home(cluster: Cluster) -> None:
    # jobrun submits on the head node; the job runs on a compute node and writes its output
    # there, in the home it shares with the head node (sbatch --wait: until the job ended).
    submitted = cluster.run("head-node-0", "su - jobrun -c 'sbatch --wait --parsable "
                            f"--nodelist={cluster.host('compute-nodes-1')} "
                            "--output=/home/jobrun/job-%j.out --wrap \"hostname; id -un\"'")
    output = f"/home/jobrun/job-{submitted.strip()}.out"
    assert cluster.run("head-node-0", f"cat {output}").split() == [
        cluster.host("compute-nodes-1"), "jobrun"]
    # On the head node's disk, the file is jobrun's (written through jobrun's own session).
    assert cluster.run("head-node-0", f"stat -c %U {output}").strip() == "jobrun"
    assert cluster.run("compute-nodes-0", f"cat {output}").split()[0] == cluster.host(
        "compute-nodes-1")


def test_jobrun_reaches_the_head_node_host_based_and_jobs_run_as_jobrun(
    cluster: Cluster,
) -> None:
    head = cluster.host("head-node-0")
    # No key of its own anywhere: the only way in is host-based authentication.
    assert cluster.ssh("compute-nodes-0", "ls -A ~jobrun/.ssh 2>/dev/null | grep -v "
                       "known_hosts").stdout == ""
    hop = cluster.run("compute-nodes-0", "su - jobrun -c 'ssh -o BatchMode=yes "
                      f"-o PreferredAuthentications=hostbased {head} \"hostname; id -un\"'")
    assert hop.split() == [head, "jobrun"]
    ran = cluster.run("head-node-0", "su - jobrun -c 'srun -N2 id -un'")
    assert ran.split() == ["jobrun", "jobrun"]


def test_the_munge_key_reaches_only_the_members_that_require_it(cluster: Cluster) -> None:
    key = base64.b64decode(cluster.generated()["munge-key"])
    assert len(key) == 1024
    for member in ("head-node-0", "compute-nodes-0", "compute-nodes-1"):
        on_disk = cluster.run(member, "base64 -w0 /etc/munge/munge.key; echo; "
                              "stat -c '%a %U' /etc/munge/munge.key "
                              "/var/lib/oneclick/data/munge-key")
        encoded, key_mode, data_mode = on_disk.splitlines()
        assert base64.b64decode(encoded) == key, member
        assert (key_mode, data_mode) == ("400 munge", "600 root"), member
    # The monitor's role does not require it: not on its disk, not in its context.
    monitor = cluster.ssh("monitor-0", "ls /etc/munge/munge.key /var/lib/oneclick/data/; "
                          "cat /var/lib/oneclick/context.json")
    assert "No such file or directory" in monitor.stderr and "munge-key" not in monitor.stdout
    context = json.loads(monitor.stdout[monitor.stdout.index("{"):])
    assert context["data"] == {}
    # ... and the compute nodes, which do not require the gridmap, have only the key.
    assert cluster.run("compute-nodes-0", "ls /var/lib/oneclick/data/").split() == [
        "munge-key"]


def test_the_munge_key_outlives_a_controller_crash_and_scaling_follows_the_membership(
    cluster: Cluster, controller: ControllerProcess,
) -> None:
    before = cluster.generated()
    controller.kill()
    controller.start()  # (it waits until the broker answers again)
    patch = [{"op": "replace", "path": "/spec/roles/1/quantity", "value": 3}]
    kubectl(cluster.kubeconfig, "patch", "cl", cluster.name, "-n", cluster.namespace,
            "--type=json", "-p", json.dumps(patch))
    added = cluster.host("compute-nodes-2")

    def identified() -> bool:
        member = get(cluster.kubeconfig, cluster.namespace, "lm", added) or {}
        return bool((member.get("status") or {}).get("identity"))

    wait_until(identified, timeout=120, what=f"{added} to provide its identity")
    # The head node's agent follows the launch: it is configured again for the new node
    # (slurm.conf names it, slurmctld restarts), with nobody running anything by hand.
    wait_until(lambda: f"NodeName={added} " in cluster.ssh(
        "head-node-0", "cat /etc/slurm/slurm.conf", 60).stdout, timeout=120,
        what=f"the head node's slurm.conf to name {added}")
    assert "the context changed" in cluster.run("head-node-0", "cat /var/log/oneclick-agent.log")
    wait_until(lambda: (get(cluster.kubeconfig, cluster.namespace, "cl", cluster.name) or {})
               .get("status", {}).get("readyMembers") == "5/5", timeout=240,
               what="five ready members")
    assert cluster.generated() == before  # no second key, after the crash or the scale-up
    key = base64.b64decode(before["munge-key"])
    assert base64.b64decode(cluster.run("compute-nodes-2", "base64 -w0 /etc/munge/munge.key")
                            ) == key
    assert sinfo(cluster)[added] == "idle"
    assert cluster.run("head-node-0", f"srun --nodelist={added} hostname").strip() == added

    # Scale down to one compute node: the removed ones leave sinfo and the machine.
    patch[0]["value"] = 1
    kubectl(cluster.kubeconfig, "patch", "cl", cluster.name, "-n", cluster.namespace,
            "--type=json", "-p", json.dumps(patch))
    wait_until(lambda: len(members(cluster.kubeconfig, cluster.namespace, cluster.name)) == 3,
               timeout=120, what="the scale-down")
    wait_until(lambda: sinfo_while_restarting(cluster) == {
        cluster.host("compute-nodes-0"): "idle"},
               timeout=120, what="sinfo to list only compute-nodes-0")
    assert cluster.run("head-node-0", "srun -N1 hostname").strip() == cluster.host(
        "compute-nodes-0")
    left = {host for _, host in daemons_of(cluster.name)}
    assert left == {cluster.host(m) for m in ("head-node-0", "compute-nodes-0")}, left


def test_terminate_leaves_no_daemon_of_the_launch(cluster: Cluster) -> None:
    assert {command for command, _ in daemons_of(cluster.name)} >= {
        "slurmctld", "slurmd", "munged", "sshfs"}
    kubectl(cluster.kubeconfig, "delete", "cl", cluster.name, "-n", cluster.namespace,
            "--timeout=120s")
    assert members(cluster.kubeconfig, cluster.namespace, cluster.name) == []
    assert daemons_of(cluster.name) == []
