"""`occ run`: launch a cluster and follow it until every member is contextualized, as the
Nimbus cloud client's `--run --cluster` did: progress, reports, known_hosts, the head node."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from oneclick.api.conditions import condition_of
from oneclick.api.launch import SETTLED_PHASES, LaunchCondition, LaunchPhase
from oneclick.cli import known_hosts, progress, times
from oneclick.cli.documents import DocumentError, load
from oneclick.cli.follow import Followed, until_changed
from oneclick.cli.launches import (
    CLUSTER_LABEL,
    address,
    head,
    in_launch_order,
    members,
    role_label,
    wants_known_hosts,
)
from oneclick.cli.reports import History, default_history
from oneclick.cli.session import Globals, Session, run_async
from oneclick.kits.kube import JSON, ApiError
from oneclick.kits.resources import custom_path

KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def _user_keys(given: tuple[Path, ...]) -> list[str]:
    paths = list(given) or [p for p in (Path.home() / ".ssh" / f for f in KEY_FILES)
                            if p.is_file()][:1]
    keys = []
    for path in paths:
        try:
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError as error:
            raise click.ClickException(f"{path}: {error.strerror}") from error
    return keys


def _lifetime(hours: float) -> str:
    """--hours as the user would write the lifetime: 1h, 1h30m, 45m."""
    h, m = divmod(max(1, round(hours * 60)), 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m or not h else "")


async def follow(session: Session, name: str, history: History, known_hosts_file: Path | None,
                 seconds: float, started: float) -> int:
    """Follow the launch until it is Ready, failed or expired (`started`: when it was made,
    on the monotonic clock), then report as the Nimbus client did."""
    deadline = started + seconds
    launch_path = custom_path("ClusterLaunch", session.namespace)
    followed = await Followed(session.kube, launch_path,
                              {"fieldSelector": f"metadata.name={name}"}).start()
    members_of = await Followed(session.kube, custom_path("LaunchMember", session.namespace),
                                {"labelSelector": f"{CLUSTER_LABEL}={name}"}).start()
    stage, ended = "running", (LaunchPhase.FAILED, LaunchPhase.EXPIRED)
    try:
        with progress.display(history) as display:
            display.line("\nWaiting for launch updates.")
            while True:
                if not followed.items():
                    raise click.ClickException(f"{name} was deleted while it launched")
                launch = followed.items()[0]
                status = launch.get("status") or {}
                phase = status.get("phase")
                display.show(launch, members_of.items(), stage,
                             f"members {stage}", time.monotonic() - started)
                if stage == "running" and (phase in SETTLED_PHASES or condition_of(
                        status, LaunchCondition.MEMBERS_RUNNING).get("status") == "True"):
                    if phase not in ended:  # (a failed launch's members are not all running)
                        display.line(f"  - {name}: all members are Running")
                    reports = history.write_vm_reports(await members(session, name))
                    display.line(f"  - wrote reports to '{reports}'")
                    if phase in ended:
                        break
                    stage = "contextualized"
                    display.line("\nWaiting for context broker updates.")
                    continue
                if stage == "contextualized" and phase in SETTLED_PHASES:
                    break
                if time.monotonic() > deadline:
                    raise click.ClickException(f"gave up waiting for {name} (still {phase}); "
                                               f"it goes on: occ get cl {name}")
                await until_changed(followed, members_of, seconds=1.0)
                await asyncio.sleep(0.2)  # thousands of members change at once: draw 5 a second
    finally:
        await followed.stop()
        await members_of.stop()
    took = time.monotonic() - started
    found = await members(session, name)
    return report(display, launch, found, history, known_hosts_file, took)


def report(display: progress.Display, launch: JSON, found: list[JSON], history: History,
           known_hosts_file: Path | None, took: float) -> int:
    """Reports, known_hosts and the head node of a launch that ended its launching."""
    name, status = launch["metadata"]["name"], launch.get("status") or {}
    found = in_launch_order(launch, found)
    ctx_dir, summary = history.write_ctx_reports(launch, found)
    if status.get("phase") != LaunchPhase.READY:
        failed = (condition_of(status, LaunchCondition.FAILED)
                  or condition_of(status, LaunchCondition.READY))
        display.line(f"  - {name}: {status.get('phase', 'failed').upper()}: "
                     f"{failed.get('message', '')}")
        display.line(f"  - wrote error reports (with every agent's log) to '{ctx_dir}'")
        return 1
    display.line(f"  - {name}: contextualized, Ready in {times.took(took)}")
    display.line(f"  - wrote ctx summary to '{summary}'")
    display.line(f"  - wrote reports to '{ctx_dir}'")
    if known_hosts_file is not None:
        lines = []
        display.line("")
        for member in found:
            if wants_known_hosts(launch, member):
                entries = known_hosts.entries(member)
                if not entries:
                    display.line(f"SSH trusts no key for {member['metadata']['name']}: it gave "
                                 "none that parses, or its provider gave no address")
                    continue
                lines += entries
                owned = known_hosts.hosts(member)
                display.line(f"SSH trusts new key for {' and '.join(owned[:2])}"
                             f"  [[ {role_label(launch, member)} ]]")
        known_hosts.install(known_hosts_file, lines)
    first = head(launch, found)
    if first is not None:
        display.line(f"\nhead node: {status.get('headNode')} at {address(first)}"
                     f"  (occ ssh {name})")
    expires = times.parse(status.get("expiresAt"))
    if expires is not None:
        display.line(f"expires {times.countdown(expires)} (at {status['expiresAt']}): "
                     f"occ terminate {name} ends it sooner")
    return 0


@click.command()
@click.option("--cluster", "cluster_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Cluster document: a ClusterLaunch in YAML, or a Nimbus cluster XML.")
@click.option("--hours", type=click.FloatRange(min=1 / 60, max=8760),
              help="Lifetime of the launch in hours (default: the document's, else 1).")
@click.option("--name", help="Name (handle) of the launch (default: the document's, else "
                             "cluster-XXXXX).")
@click.option("--known-hosts", "known_hosts_file", type=click.Path(dir_okay=False,
              path_type=Path), default=Path.home() / ".ssh" / "known_hosts", show_default=True,
              help="Where to install the members' SSH host keys.")
@click.option("--no-known-hosts", is_flag=True, help="Do not touch any known_hosts file.")
@click.option("--ssh-key", "ssh_keys", multiple=True, type=click.Path(dir_okay=False,
              path_type=Path), help="Public key to trust for root logins (repeatable; default: "
                                    "your first ~/.ssh/id_*.pub).")
@click.option("--history-dir", type=click.Path(file_okay=False, path_type=Path),
              default=default_history(), show_default=True,
              help="Where to write run-log.txt and the reports of each launch.")
@click.option("--timeout", type=float, default=1800.0, show_default=True,
              help="Seconds to follow the launch before giving up (it goes on).")
@click.option("--no-wait", is_flag=True, help="Create the launch, print its handle, and exit.")
@click.pass_obj
def run(globals_: Globals, cluster_file: Path, hours: float | None, name: str | None,
        known_hosts_file: Path, no_known_hosts: bool, ssh_keys: tuple[Path, ...],
        history_dir: Path, timeout: float, no_wait: bool) -> None:
    """Launch a cluster and wait until every member is configured.

    Follows the launch as its members boot and contextualize (on a terminal, one line per
    role, redrawn in place: launched, running and contextualized of N; elsewhere, a plain
    line at each change), writes reports to the history directory, installs every member's
    SSH host key into known_hosts (so the first ssh asks nothing), and prints the head node
    and when the launch expires. Exits non-zero, pointing at the error reports, when the
    launch fails and is backed out.

    \b
    Examples:
      occ run --hours 1 --cluster samples/base-cluster.yaml
      occ run --cluster samples/base-cluster.xml --name grid --known-hosts ./known_hosts
      occ run --cluster samples/peers.yaml --no-wait
      occ run --cluster big.yaml 2> progress.log     # plain lines, for logs
    """
    try:
        document = load(cluster_file)
    except DocumentError as error:
        raise click.ClickException(str(error)) from error
    metadata = document["metadata"]
    if name:
        metadata.pop("generateName", None)
        metadata["name"] = name
    elif not metadata.get("name"):
        metadata["generateName"] = "cluster-"
    if hours is not None:
        document["spec"]["lifetime"] = _lifetime(hours)
    keys = _user_keys(ssh_keys)
    if not keys:
        click.echo("warning: no SSH public key found (~/.ssh/id_*.pub, or --ssh-key): you will "
                   "not be able to log in as root; make one with ssh-keygen", err=True)
    document["spec"]["sshAuthorizedKeys"] = list(dict.fromkeys(
        [*document["spec"].get("sshAuthorizedKeys", []), *keys]))

    async def work(session: Session) -> int:
        metadata.pop("namespace", None)
        path = custom_path("ClusterLaunch", session.namespace)
        started = time.monotonic()
        try:
            created = await session.kube.create(path, document)
        except ApiError as error:
            raise click.ClickException(f"{cluster_file}: the launch was refused: "
                                       f"{error.reason}") from error
        handle = created["metadata"]["name"]
        click.echo(f"Launching {handle}... done.", err=True)
        click.echo(handle)
        if no_wait:
            return 0
        history = History(history_dir, handle)
        history.log(f"launched {handle} from {cluster_file} in namespace {session.namespace}")
        return await follow(session, handle, history,
                            None if no_known_hosts else known_hosts_file, timeout, started)

    sys.exit(run_async(globals_, work))
