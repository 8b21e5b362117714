"""Looking at launches: `occ get`, `describe`, `wait`, `logs`, `known-hosts`."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
import yaml

from cli import known_hosts
from cli.launches import CLUSTER_LABEL, NotFound, events, get_launch, members, wants_known_hosts
from cli.session import Globals, Session, run_async
from kits.kube import JSON, custom_path

KINDS = {"clusters": "ClusterLaunch", "cluster": "ClusterLaunch", "cl": "ClusterLaunch",
         "clusterlaunches": "ClusterLaunch", "launches": "ClusterLaunch",
         "members": "LaunchMember", "member": "LaunchMember", "lm": "LaunchMember",
         "launchmembers": "LaunchMember"}


def _table(table: JSON, wide: bool) -> str:
    columns = [(i, c) for i, c in enumerate(table.get("columnDefinitions", []))
               if wide or c.get("priority", 0) == 0]
    rows = [[c["name"].upper() for _, c in columns]]
    rows += [["" if row["cells"][i] is None else str(row["cells"][i]) for i, _ in columns]
             for row in table.get("rows", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


@click.command()
@click.argument("kind", default="clusters", type=click.Choice(sorted(KINDS)),
                metavar="[clusters|members]")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]))
@click.option("-l", "--cluster", "cluster", help="Only the members of this launch.")
@click.pass_obj
def get(globals_: Globals, kind: str, name: str | None, output: str | None,
        cluster: str | None) -> None:
    """List launches or members, with the same columns as kubectl.

    \b
    Examples:
      occ get                        # every launch in the namespace
      occ get members --cluster grid
      occ get cluster grid -o yaml
    """
    resource = KINDS[kind]

    async def work(session: Session) -> str:
        path = custom_path(resource, session.namespace, name)
        selector = {"labelSelector": f"{CLUSTER_LABEL}={cluster}"} if cluster and not name else {}
        if output in (None, "wide"):
            table = await session.kube.table(path, **selector)
            if not table.get("rows"):
                return f"No resources found in {session.namespace} namespace."
            return _table(table, output == "wide")
        found = await (session.kube.get(path) if name else session.kube.list(path, **selector))
        if output == "name":
            items = [found] if name else found.get("items", [])
            return "\n".join(f"{resource.lower()}/{i['metadata']['name']}" for i in items)
        if output == "json":
            return json.dumps(found, indent=2)
        return yaml.safe_dump(found, sort_keys=False).rstrip()

    click.echo(run_async(globals_, work))


@click.command()
@click.argument("kind", type=click.Choice(["cluster", "cl", "clusterlaunch"]),
                metavar="cluster")
@click.argument("name")
@click.pass_obj
def describe(globals_: Globals, kind: str, name: str) -> None:
    """Show a launch: its conditions, its members and its events.

    \b
    Example:
      occ describe cluster grid
    """

    async def work(session: Session) -> str:
        try:
            launch = await get_launch(session, name)
        except NotFound as error:
            raise click.ClickException(str(error)) from error
        status = launch.get("status") or {}
        lines = [f"Name:        {name}", f"Namespace:   {session.namespace}",
                 f"Phase:       {status.get('phase', 'Pending')}",
                 f"Ready:       {status.get('readyMembers', '-')}",
                 f"Head node:   {status.get('headNode', '-')}",
                 f"Expires:     {status.get('expiresAt', '-')}", "Conditions:"]
        lines += [f"  {c['type']:<16} {c['status']:<6} {c.get('reason', ''):<24} "
                  f"{c.get('message', '')}" for c in status.get("conditions", [])]
        lines.append("Members:")
        for member in await members(session, name):
            ms = member.get("status") or {}
            lines.append(f"  {member['metadata']['name']:<36} {ms.get('phase', 'Pending'):<16} "
                         f"{', '.join(ms.get('addresses', [])):<16} "
                         f"{(ms.get('identity') or {}).get('fqdn', '')}")
        lines.append("Events:")
        lines += [f"  {e.get('type', ''):<8} {e.get('reason', ''):<24} {e.get('message', '')}"
                  for e in await events(session, name)]
        return "\n".join(lines)

    click.echo(run_async(globals_, work))


@click.command()
@click.argument("name")
@click.option("--for", "condition", default="condition=Ready", show_default=True,
              help="condition=TYPE, or phase=PHASE.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds.")
@click.pass_obj
def wait(globals_: Globals, name: str, condition: str, timeout: float) -> None:
    """Wait until a launch has a condition (or a phase).

    \b
    Examples:
      occ wait grid --for=condition=Ready --timeout=600
      occ wait grid --for=phase=Expired
    """
    what, _, value = condition.partition("=")
    if what not in ("condition", "phase") or not value:
        raise click.BadParameter("use condition=TYPE or phase=PHASE", param_hint="--for")

    async def work(session: Session) -> int:
        deadline = time.monotonic() + timeout
        while True:
            status = (await get_launch(session, name)).get("status") or {}
            if what == "phase" and status.get("phase") == value:
                return 0
            if what == "condition" and any(c["type"] == value and c["status"] == "True"
                                           for c in status.get("conditions", [])):
                return 0
            if time.monotonic() > deadline:
                click.echo(f"error: timed out waiting for {condition} on {name} (phase "
                           f"{status.get('phase')})", err=True)
                return 1
            await asyncio.sleep(1.0)

    sys.exit(run_async(globals_, work))


@click.command()
@click.argument("name")
@click.option("--member", help="Only this member (its name, or ROLE-INDEX).")
@click.pass_obj
def logs(globals_: Globals, name: str, member: str | None) -> None:
    """Print what each member's agent reported, with its log tail.

    \b
    Example:
      occ logs grid --member head-node-0
    """

    async def work(session: Session) -> str:
        found = await members(session, name)
        if member:
            found = [m for m in found if m["metadata"]["name"] in (member, f"{name}-{member}")]
            if not found:
                raise click.ClickException(f"{name} has no member {member!r}")
        parts = []
        for m in found:
            report = (m.get("status") or {}).get("report")
            header = f"==> {m['metadata']['name']} <=="
            if report is None:
                parts.append(f"{header}\n(no report yet)")
            else:
                result = "ok" if report.get("ok") else (
                    f"FAILED at {report.get('failedStep')} (exit code {report.get('exitCode')})")
                parts.append(f"{header}\n{result}\n{report.get('logTail', '')}")
        return "\n\n".join(parts)

    click.echo(run_async(globals_, work))


@click.command(name="known-hosts")
@click.argument("name")
@click.option("--all", "every", is_flag=True, help="Include roles with knownHosts: false.")
@click.pass_obj
def known_hosts_command(globals_: Globals, name: str, every: bool) -> None:
    """Print known_hosts lines for a launch's members (their host keys, as they reported them).

    \b
    Example:
      occ known-hosts grid >> ~/.ssh/known_hosts
    """

    async def work(session: Session) -> str:
        launch = await get_launch(session, name)
        return "\n".join(line for m in await members(session, name)
                         if every or wants_known_hosts(launch, m)
                         for line in known_hosts.entries(m))

    click.echo(run_async(globals_, work))
