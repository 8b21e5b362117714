"""Looking at launches: `occ describe`, `wait`, `logs`, `known-hosts` (`occ get` is in get)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import click

from oneclick.api.launch import ClusterLaunchSpec, LaunchPhase
from oneclick.cli import follow, known_hosts, scope, times
from oneclick.cli.launches import (
    CLUSTER_LABEL,
    NotFound,
    event_time,
    events,
    expires_in,
    find_member,
    get_launch,
    in_launch_order,
    in_order,
    members,
    wants_known_hosts,
)
from oneclick.cli.scope import Scope
from oneclick.cli.session import Globals, Session, run_async
from oneclick.cli.terminal import safe
from oneclick.kits.kube import JSON, resource_path
from oneclick.kits.resources import custom_path

DEFAULT_LIFETIME: str = ClusterLaunchSpec.model_fields["lifetime"].default


def out(text: str) -> None:
    click.echo(safe(text))  # members' own text: no escape sequences


def aligned(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows as columns, kubectl describe's way (the last column as long as it is)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
            for r in rows]


def event_row(event: JSON) -> list[str]:
    """Type, Reason, Age (x COUNT over AGE when it repeated), From, Message."""
    first = times.parse(event.get("eventTime")) or times.parse(event.get("firstTimestamp"))
    count = (event.get("series") or {}).get("count") or event.get("count") or 1
    interval = times.age(first)
    if count > 1:
        interval = f"{times.age(event_time(event))} (x{count} over {interval})"
    source = (event.get("source") or {}).get("component") or event.get(
        "reportingController") or event.get("reportingComponent") or ""
    return [str(event.get("type", "")), str(event.get("reason", "")), interval, str(source),
            str(event.get("message", "")).strip()]


async def describe_launch(session: Session, launch: JSON) -> str:
    meta, spec = launch["metadata"], launch["spec"]
    status = launch.get("status") or {}
    name, namespace = meta["name"], meta["namespace"]
    created = times.parse(meta.get("creationTimestamp"))
    ready_at = times.parse(status.get("readyAt"))
    labels = ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items())
    provider = spec.get("provider") or "(the controller's default)"
    lines = [f"Name:        {name}", f"Namespace:   {namespace}",
             f"Labels:      {labels or '<none>'}",
             f"Provider:    {provider}",
             f"Phase:       {status.get('phase', 'Pending')}",
             f"Ready:       {status.get('readyMembers', '-')}",
             f"Head node:   {status.get('headNode', '-')}",
             f"Created:     {meta.get('creationTimestamp')} ({times.age(created)} ago)"]
    if ready_at and created:
        lines.append(f"Ready at:    {status['readyAt']} "
                     f"({times.short((ready_at - created).total_seconds())} after creation)")
    lines += [f"Lifetime:    {spec.get('lifetime', DEFAULT_LIFETIME)}",
              f"Expires:     {status.get('expiresAt', '-')} ({expires_in(launch)})"
              if status.get("phase") != LaunchPhase.FAILED else
              "Expires:     - (it failed: what is left of it lives until occ terminate)",
              "Conditions:"]
    conditions = status.get("conditions", [])
    lines += aligned([["Type", "Status", "Reason", "Message"]] + [
        [c["type"], c["status"], c.get("reason", ""), c.get("message", "")]
        for c in conditions]) if conditions else ["  <none>"]
    found = in_launch_order(launch, await members(session, name, namespace))
    lines.append("Members:")
    lines += aligned([["Name", "Phase", "Address", "FQDN"]] + [
        [m["metadata"]["name"], (m.get("status") or {}).get("phase", "Pending"),
         ", ".join((m.get("status") or {}).get("addresses", [])),
         ((m.get("status") or {}).get("identity") or {}).get("fqdn", "")]
        for m in found]) if found else ["  <none>"]
    said = await events(session, name, namespace)
    lines.append("Events:" + ("" if said else "  <none>"))
    if said:
        lines += aligned([["Type", "Reason", "Age", "From", "Message"],
                          ["----", "------", "----", "----", "-------"]]
                         + [event_row(e) for e in said])
    return "\n".join(lines)


async def _launches(session: Session, name: str | None, chosen: Scope) -> list[JSON]:
    if name:
        try:
            return [await get_launch(session, name)]
        except NotFound as error:
            raise click.ClickException(str(error)) from error
    listing = await session.kube.list(
        custom_path("ClusterLaunch", chosen.namespace(session.namespace)), **chosen.labels())
    items: list[JSON] = listing.get("items", [])
    return sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))


@click.command()
@click.argument("kind", type=click.Choice(["cluster", "clusters", "cl", "clusterlaunch",
                                           "clusterlaunches"]), metavar="cluster")
@click.argument("name", required=False)
@scope.options("After describing, print each new event of the launches as it happens "
               "(Ctrl-C stops).")
@click.pass_obj
def describe(globals_: Globals, kind: str, name: str | None, namespace_given: str | None,
             all_namespaces: bool, selector: str | None, watch: bool) -> None:
    """Show launches: conditions, members, and events (oldest first, with their age).

    Without NAME, every launch of the namespace (or of all, with -A) that -l selects.

    \b
    Examples:
      occ describe cluster grid
      occ describe cluster grid -w         # then each new event, until Ctrl-C
      occ describe cluster -A -l team=blue
    """
    chosen = scope.of(all_namespaces, selector, watch, namespace_given)
    chosen.refuse_name_across_namespaces(name)

    async def work(session: Session) -> None:
        found = await _launches(session, name, chosen)
        if not found:
            namespace = chosen.namespace(session.namespace)
            click.echo("No resources found" + (f" in {namespace} namespace." if namespace
                                                else "."), err=True)
        else:
            out("\n\n".join([await describe_launch(session, launch) for launch in found]))
        if chosen.watch:
            await _follow_events(session, found, name, chosen)

    run_async(chosen.globals(globals_), work)


async def _follow_events(session: Session, described: list[JSON], name: str | None,
                         chosen: Scope) -> None:
    """New events of the described launches (of any launch when none was named and nothing
    selected), as they come."""
    namespace = chosen.namespace(session.namespace)
    path = resource_path("v1", "events", namespace)
    wanted = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in described}
    every = not name and not chosen.selector
    params = {"fieldSelector": "involvedObject.kind=ClusterLaunch"
              + (f",involvedObject.name={name}" if name else "")}
    version = str((await session.kube.list(path, **params))["metadata"]["resourceVersion"])
    while True:
        try:
            async for event in follow.events(session.kube, path, version, params):
                obj = event["object"]
                involved = obj.get("involvedObject") or {}
                key = (involved.get("namespace", ""), involved.get("name", ""))
                if event["type"] == "DELETED" or not (every or key in wanted):
                    continue
                prefix = "" if len(wanted) == 1 and not every else f"{key[0]}/{key[1]}  "
                out(prefix + aligned([event_row(obj)])[0].strip())
        except follow.Gone:
            version = str((await session.kube.list(path, **params))["metadata"][
                "resourceVersion"])


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


def _report(member: JSON, namespaces: bool) -> str:
    meta = member["metadata"]
    header = f"==> {meta['namespace'] + '/' if namespaces else ''}{meta['name']} <=="
    report = (member.get("status") or {}).get("report")
    if report is None:
        return f"{header}\n(no report yet)"
    result = "ok" if report.get("ok") else (
        f"FAILED at {report.get('failedStep')} (exit code {report.get('exitCode')})")
    return f"{header}\n{result}\n{report.get('logTail', '')}"


@click.command()
@click.argument("name", required=False)
@click.option("--member", help="Only this member of launch NAME (its name, ROLE-INDEX, or a "
                               "role of one member).")
@click.option("-f", "--follow", "follow_", is_flag=True, help="The same as -w.")
@scope.options("Print each member's report as it arrives, until every member of launch NAME "
               "has reported or the launch has ended (without NAME: until Ctrl-C).")
@click.pass_obj
def logs(globals_: Globals, name: str | None, member: str | None, follow_: bool,
         namespace_given: str | None, all_namespaces: bool, selector: str | None,
         watch: bool) -> None:
    """Print what each member's agent reported, with its log tail.

    The members of launch NAME, or those -l selects (members carry the labels
    clusters.oneclick.dev/cluster and clusters.oneclick.dev/role).

    \b
    Examples:
      occ logs grid
      occ logs grid --member compute-nodes-1
      occ logs grid -w                     # each report as it arrives
      occ logs -A -l clusters.oneclick.dev/role=head-node
    """
    chosen = scope.of(all_namespaces, selector, watch or follow_, namespace_given)
    chosen.refuse_name_across_namespaces(name)
    if not name and not (selector or all_namespaces):
        raise click.UsageError("give a launch NAME, or select members with -l (or -A)")
    if member and not name:
        raise click.UsageError("--member needs the launch's NAME")

    async def work(session: Session) -> int:
        namespace = chosen.namespace(session.namespace)
        params = chosen.labels(f"{CLUSTER_LABEL}={name}" if name else "")
        path = custom_path("LaunchMember", namespace)

        def pick(found: list[JSON]) -> list[JSON]:
            found = in_order(found)
            if not member:
                return found
            one = find_member(name or "", found, member)
            return [one] if one else []

        if not chosen.watch:
            found = pick((await session.kube.list(path, **params)).get("items", []))
            if member and not found:
                raise click.ClickException(f"{name} has no member {member!r}")
            out("\n\n".join(_report(m, chosen.all_namespaces) for m in found))
            return 0
        return await _follow_reports(session, path, params, name, pick, chosen)

    sys.exit(run_async(chosen.globals(globals_), work))


async def _follow_reports(session: Session, path: str, params: dict[str, str],
                          name: str | None, pick: Callable[[list[JSON]], list[JSON]],
                          chosen: Scope) -> int:
    """Each report once, as it arrives; for launch NAME, until it is Ready (every report
    shown: 0) or has failed or expired (what never came shown as such: 1)."""
    reports = await follow.Followed(session.kube, path, params).start()
    launch = None if name is None else await follow.Followed(
        session.kube, custom_path("ClusterLaunch", session.namespace),
        {"fieldSelector": f"metadata.name={name}"}).start()
    shown: set[str] = set()

    def show(member: JSON) -> None:
        out(("\n" if shown else "") + _report(member, chosen.all_namespaces))
        shown.add(member["metadata"]["uid"])

    try:
        while True:
            found = pick(reports.items())
            for m in found:
                if m["metadata"]["uid"] not in shown and (m.get("status") or {}).get("report"):
                    show(m)
            if launch is not None:
                if not launch.items():
                    click.echo(f"error: clusterlaunch {name!r} is gone", err=True)
                    return 1
                status = launch.items()[0].get("status") or {}
                if status.get("phase") in (LaunchPhase.FAILED, LaunchPhase.EXPIRED):
                    for m in found:
                        if m["metadata"]["uid"] not in shown:
                            show(m)
                    return 1
                if status.get("phase") == LaunchPhase.READY and all(
                        m["metadata"]["uid"] in shown for m in found):
                    return 0
            await follow.until_changed(reports, *([launch] if launch else []), seconds=5.0)
    finally:
        await reports.stop()
        if launch is not None:
            await launch.stop()


@click.command(name="known-hosts")
@click.argument("name")
@click.option("--all", "every", is_flag=True, help="Include roles with knownHosts: false.")
@click.pass_obj
def known_hosts_command(globals_: Globals, name: str, every: bool) -> None:
    """Print known_hosts lines for a launch's members.

    Each member's host keys (as it reported them, parsed strictly) under the names the launch
    owns: the addresses its provider reported and its alias ROLE-INDEX.LAUNCH.NAMESPACE.oneclick
    (what `occ ssh` checks keys under). Names a member gives itself are never used.

    \b
    Example:
      occ known-hosts grid >> ~/.ssh/known_hosts
    """

    async def work(session: Session) -> str:
        launch = await get_launch(session, name)
        return "\n".join(line for m in await members(session, name)
                         if every or wants_known_hosts(launch, m)
                         for line in known_hosts.entries(m))

    out(run_async(globals_, work))
