"""The one-click walkthrough, step by step, as a user runs it with occ:
edit a cluster document, run one command, wait, log in with the host key already trusted."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import kubectl
from tests.controller.launches import live_instances, members
from tests.e2e.conftest import User

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def launched(user: User, namespace: str, *args: str) -> tuple[str, str]:
    """occ run; returns (handle, everything it printed)."""
    result = user.occ("-n", namespace, "run", "--known-hosts", str(user.known_hosts),
                      "--history-dir", str(user.history), *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return result.stdout.strip().splitlines()[0], output


def addresses(kubeconfig: Path, namespace: str, handle: str) -> dict[str, str]:
    return {m["metadata"]["name"].removeprefix(f"{handle}-"): m["status"]["addresses"][0]
            for m in members(kubeconfig, namespace, handle)}


def test_the_base_cluster_walkthrough(user: User, kubeconfig: Path, namespace: str,
                                      tmp_path: Path, local_state: Path) -> None:
    # Step 1: the user edits the access policy (the gridmap data) of the sample.
    document = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())
    document["metadata"] = {"generateName": "cluster-"}
    gridmap = '"/O=Grid/OU=OneClick/CN=Walk Through" jobrun\n'
    document["spec"]["data"][0]["value"] = gridmap
    cluster = tmp_path / "my-cluster.yaml"
    cluster.write_text(yaml.safe_dump(document))

    # Step 2: one command.
    handle, output = launched(user, namespace, "--hours", "1", "--cluster", str(cluster))
    assert handle.startswith("cluster-")
    assert f"Launching {handle}... done." in output
    assert f"{handle}: all members are Running" in output
    assert f"{handle}: contextualized" in output
    lines = output.splitlines()
    at = addresses(kubeconfig, namespace, handle)
    # Keys are trusted under names the launch owns: each member's alias (for occ ssh) and the
    # address its provider reported (for plain ssh).
    trusted = [line for line in lines if line.startswith("SSH trusts new key for")]
    assert trusted == [
        f"SSH trusts new key for {m}.{handle}.{namespace}.oneclick and {at[m]}  [[ {label} ]]"
        for m, label in (("head-node-0", "head-node"), ("compute-nodes-0", "compute-nodes #0"),
                         ("compute-nodes-1", "compute-nodes #1"))
    ]
    assert f"head node: {handle}-head-node-0.oneclick.local at {at['head-node-0']}" in output

    # The reports, where the Nimbus client kept them.
    history = user.history / handle
    assert sorted(p.name for p in (history / "reports-vm").iterdir()) == sorted(
        f"{handle}-{m}.txt" for m in at)
    assert json.loads((history / "reports-ctx" / "CTX-OK.txt").read_text())["cluster"] == handle
    assert "contextualized" in (history / "run-log.txt").read_text()

    # Step 3: log in to the head node: no prompt, its key already trusted.
    head = at["head-node-0"]
    login = user.ssh(head, "hostname")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == f"{handle}-head-node-0"

    # Every member's /etc/hosts lists every member.
    for member, address in at.items():
        hosts = user.ssh(address, "cat", "/etc/hosts").stdout
        for other, other_address in at.items():
            assert re.search(rf"^{re.escape(other_address)} {handle}-{other}\.oneclick\.local "
                             rf"{handle}-{other}$", hosts, re.M), (member, hosts)

    # A compute node reaches the head node over SSH, host-based, as the same account.
    hop = user.ssh(at["compute-nodes-0"], "ssh", "-o", "BatchMode=yes",
                   "-o", "PreferredAuthentications=hostbased",
                   f"{handle}-head-node-0", "hostname")
    assert hop.returncode == 0, hop.stderr
    assert hop.stdout.strip() == f"{handle}-head-node-0"

    # The gridmap data arrived as the head node's grid-mapfile.
    assert user.ssh(head, "cat", "/etc/grid-security/grid-mapfile").stdout == gridmap

    # Step 4: fetch the head node's self-signed host certificate, as the quick start does.
    certs = tmp_path / "certs"
    certs.mkdir()
    copied = user.scp(f"root@{head}:certs/*", certs)
    assert copied.returncode == 0, copied.stderr
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in",
                              str(certs / "hostcert.pem")], capture_output=True, text=True,
                             check=True).stdout
    assert f"CN = {handle}-head-node-0.oneclick.local" in subject

    # The walkthrough ends with work: the batch system lists both compute nodes, idle, and a
    # job runs across them.
    nodes = user.ssh(head, "sinfo --noheader --Node --format '%N %T'").stdout.splitlines()
    assert nodes == [f"{handle}-compute-nodes-0 idle", f"{handle}-compute-nodes-1 idle"]
    job = user.occ("-n", namespace, "ssh", handle, "--known-hosts", str(user.known_hosts),
                   "-i", str(user.key), "--", "srun", "-N2", "hostname")
    assert job.returncode == 0, job.stderr
    assert sorted(job.stdout.split()) == [f"{handle}-compute-nodes-0",
                                          f"{handle}-compute-nodes-1"]
    # ... and as jobrun, the account the gridmap maps the user to.
    batch = user.occ("-n", namespace, "ssh", handle, "--known-hosts", str(user.known_hosts),
                     "-i", str(user.key), "--", "su - jobrun -c 'sbatch --wrap hostname'")
    assert re.fullmatch(r"Submitted batch job \d+\n", batch.stdout), batch.stderr

    # kubectl tells the same story as occ.
    occ_view = user.occ("-n", namespace, "get", "clusters", handle).stdout.splitlines()
    kubectl_view = kubectl(kubeconfig, "get", "clusterlaunches", handle, "-n",
                           namespace).stdout.splitlines()
    assert occ_view[1].split()[:4] == kubectl_view[1].split()[:4] == [
        handle, "Ready", "3/3", f"{handle}-head-node-0.oneclick.local"]
    occ_members = user.occ("-n", namespace, "get", "members", "--cluster", handle).stdout
    kubectl_members = kubectl(kubeconfig, "get", "lm", "-n", namespace, "-l",
                              f"clusters.oneclick.dev/cluster={handle}").stdout
    assert [r.split()[:5] for r in occ_members.splitlines()] == [
        r.split()[:5] for r in kubectl_members.splitlines()]

    # occ terminate by handle removes every instance.
    done = user.occ("-n", namespace, "terminate", handle)
    assert done.returncode == 0, done.stderr
    assert not live_instances(local_state, namespace)
    assert members(kubeconfig, namespace, handle) == []


def test_a_member_left_out_of_known_hosts_is_not_trusted(
    user: User, kubeconfig: Path, namespace: str,
) -> None:
    handle, output = launched(user, namespace, "--cluster", str(SAMPLES / "three-roles.yaml"))
    assert "[[ cache-nodes" not in output and "[[ database ]]" in output
    at = addresses(kubeconfig, namespace, handle)
    assert user.ssh(at["database-0"], "true").returncode == 0
    refused = user.ssh(at["cache-nodes-0"], "true")
    assert refused.returncode != 0 and "Host key verification failed" in refused.stderr
    # ... until the user asks for it: occ known-hosts --all prints every member's keys.
    listed = user.occ("-n", namespace, "known-hosts", handle, "--all").stdout
    extra = user.home / "all_known_hosts"
    extra.write_text(listed)
    assert user.ssh(at["cache-nodes-0"], "true", known_hosts=extra).returncode == 0
    user.occ("-n", namespace, "terminate", handle)


def test_a_failing_role_script_backs_the_launch_out(
    user: User, kubeconfig: Path, namespace: str, tmp_path: Path, local_state: Path,
) -> None:
    document = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())
    for role in document["spec"]["roles"]:
        role["image"] = "broken"
    cluster = tmp_path / "broken.yaml"
    cluster.write_text(yaml.safe_dump(document))
    result = user.occ("-n", namespace, "run", "--cluster", str(cluster), "--history-dir",
                      str(user.history), "--known-hosts", str(user.known_hosts))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    reports = user.history / "base-cluster" / "reports-ctx"
    assert "FAILED" in output and f"wrote error reports (with every agent's log) to " \
        f"'{reports}'" in output
    failed = [p.read_text() for p in reports.glob("*.txt") if "ok: False" in p.read_text()]
    assert failed and "cannot reach the batch server" in failed[0]
    assert "exit code 3" in failed[0]
    assert not (reports / "CTX-OK.txt").exists()
    assert not live_instances(local_state, namespace)
    assert not user.known_hosts.exists() or "base-cluster" not in user.known_hosts.read_text()


def test_hours_sets_a_lifetime_after_which_every_instance_ends(
    user: User, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    handle, _ = launched(user, namespace, "--hours", "0.0167", "--cluster",
                         str(SAMPLES / "single-node.yaml"), "--name", "short-lived")
    assert handle == "short-lived"
    assert len(live_instances(local_state, namespace)) == 1
    waited = user.occ("-n", namespace, "wait", handle, "--for=phase=Expired", "--timeout=150",
                      timeout=200)
    assert waited.returncode == 0, waited.stderr
    assert not live_instances(local_state, namespace)


def test_a_bad_document_is_refused_naming_the_file_line_and_field(
    user: User, namespace: str, tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((SAMPLES / "base-cluster.yaml").read_text().replace(
        "quantity: 2", "quantity: -2"))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1)
                if "quantity: -2" in text)
    result = user.occ("-n", namespace, "run", "--cluster", str(bad))
    assert result.returncode == 1
    assert f"{bad}:{line}: spec.roles[1].quantity: Input should be greater than or equal " \
           f"to 0" in result.stderr
    # What only the API server knows (a role nobody provides) is refused by it, also clearly.
    unprovided = tmp_path / "unprovided.yaml"
    unprovided.write_text((SAMPLES / "base-cluster.yaml").read_text().replace(
        "roles: [nfs-server, batch-server]", "roles: [lustre-server, batch-server]"))
    refused = user.occ("-n", namespace, "run", "--cluster", str(unprovided))
    assert refused.returncode == 1
    assert "spec.roles" in refused.stderr and "must be provided by some role" in refused.stderr
