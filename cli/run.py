"""`occ run`: launch a cluster and follow it until every member is contextualized, as the
Nimbus cloud client's `--run --cluster` did: progress, reports, known_hosts, the head node."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli import known_hosts
from cli.documents import DocumentError, load
from cli.launches import address, get_launch, members, role_label, wants_known_hosts
from cli.reports import History, default_history
from cli.session import Globals, Session, run_async
from kits.kube import JSON, ApiError, custom_path

KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
TERMINAL_PHASES = ("Ready", "Failed", "Expired")


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


class Display:
    """Progress on a terminal, plain lines otherwise; every line also goes to run-log.txt."""

    def __init__(self, history: History | None) -> None:
        self.history = history
        self.console = Console(stderr=True, soft_wrap=True)
        self.live = sys.stderr.isatty()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self._last: tuple[Any, ...] = ()

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)
        if self.history:
            self.history.log(text.strip())

    def context(self) -> AbstractContextManager[Any]:
        return self.progress if self.live else nullcontext()


async def _watch(session: Session, name: str, display: Display, until: Callable[[JSON], bool],
                 counter: str, label: str, deadline: float) -> tuple[JSON, list[JSON]]:
    """Poll the launch until `until(status)`; show `counter` of the member counts."""
    task = display.progress.add_task(label, total=None)
    while True:
        launch = await get_launch(session, name)
        status = launch.get("status") or {}
        counts = status.get("members") or {}
        total, done = counts.get("total", 0), counts.get(counter, 0)
        if display.live:
            display.progress.update(task, total=total or None, completed=done)
        elif (total, done, status.get("phase")) != display._last:
            display._last = (total, done, status.get("phase"))
            display.line(f"  {label}: {done}/{total} ({status.get('phase') or 'Pending'})")
        if until(status) or status.get("phase") in ("Failed", "Expired"):
            display.progress.remove_task(task)
            return launch, await members(session, name)
        if time.monotonic() > deadline:
            raise click.ClickException(f"gave up waiting for {name} (still "
                                       f"{status.get('phase')}); it goes on: occ get cl {name}")
        await asyncio.sleep(1.0)


def _condition(status: JSON, type: str) -> JSON:
    return next((c for c in status.get("conditions", []) if c["type"] == type), {})


async def follow(session: Session, name: str, history: History, known_hosts_file: Path | None,
                 seconds: float) -> int:
    display = Display(history)
    deadline = time.monotonic() + seconds
    with display.context():
        display.line("\nWaiting for launch updates.")
        launch, found = await _watch(
            session, name, display,
            lambda s: _condition(s, "MembersRunning").get("status") == "True",
            "running", "members running", deadline)
        status = launch.get("status") or {}
        if _condition(status, "MembersRunning").get("status") == "True":
            display.line(f"  - {name}: all members are Running")
        reports = history.write_vm_reports(found)
        display.line(f"  - wrote reports to '{reports}'")
        if status.get("phase") not in ("Failed", "Expired"):
            display.line("\nWaiting for context broker updates.")
            launch, found = await _watch(session, name, display,
                                         lambda s: s.get("phase") in TERMINAL_PHASES,
                                         "contextualized", "members contextualized", deadline)
            status = launch.get("status") or {}
    order = {role["name"]: i for i, role in enumerate(launch["spec"]["roles"])}
    found.sort(key=lambda m: (order.get(m["spec"]["role"], len(order)), m["spec"]["index"]))
    ctx_dir, summary = history.write_ctx_reports(launch, found)
    if status.get("phase") != "Ready":
        failed = _condition(status, "Failed") or _condition(status, "Ready")
        display.line(f"  - {name}: {status.get('phase', 'failed').upper()}: "
                     f"{failed.get('message', '')}")
        display.line(f"  - wrote error reports (with every agent's log) to '{ctx_dir}'")
        return 1
    display.line(f"  - {name}: contextualized")
    display.line(f"  - wrote ctx summary to '{summary}'")
    display.line(f"  - wrote reports to '{ctx_dir}'")
    if known_hosts_file is not None:
        lines = []
        display.line("")
        for member in found:
            if wants_known_hosts(launch, member):
                entries = known_hosts.entries(member)
                lines += entries
                host = (member["status"].get("identity") or {}).get("fqdn") or address(member)
                display.line(f"SSH trusts new key for {host}  [[ {role_label(launch, member)} ]]")
        known_hosts.install(known_hosts_file, lines)
    head = next((m for m in found if m["spec"]["role"] == launch["spec"]["roles"][0]["name"]
                 and m["spec"]["index"] == 0), None)
    if head is not None:
        display.line(f"\nhead node: {status.get('headNode')} at {address(head)}"
                     f"  (occ ssh {name})")
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

    Follows the launch as its members boot and contextualize, writes reports to the history
    directory, installs every member's SSH host key into known_hosts (so the first ssh asks
    nothing), and prints the head node. Exits non-zero, pointing at the error reports, when
    the launch fails and is backed out.

    \b
    Examples:
      occ run --hours 1 --cluster samples/base-cluster.yaml
      occ run --cluster samples/base-cluster.xml --name grid --known-hosts ./known_hosts
      occ run --cluster samples/peers.yaml --no-wait
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
        document["spec"]["lifetime"] = f"{max(1, round(hours * 60))}m"
    keys = _user_keys(ssh_keys)
    if not keys:
        click.echo("warning: no SSH public key found (~/.ssh/id_*.pub, or --ssh-key): you will "
                   "not be able to log in as root; make one with ssh-keygen", err=True)
    document["spec"]["sshAuthorizedKeys"] = list(dict.fromkeys(
        [*document["spec"].get("sshAuthorizedKeys", []), *keys]))

    async def work(session: Session) -> int:
        metadata.pop("namespace", None)
        path = custom_path("ClusterLaunch", session.namespace)
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
                            None if no_known_hosts else known_hosts_file, timeout)

    sys.exit(run_async(globals_, work))
