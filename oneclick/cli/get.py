"""`occ get`: launches or members, with kubectl's columns and options (-A, -l, -w, -o)."""

from __future__ import annotations

import json

import click
import yaml

from oneclick.cli import follow, scope
from oneclick.cli.launches import CLUSTER_LABEL, NotFound, get_launch
from oneclick.cli.scope import Scope
from oneclick.cli.session import Globals, Session, run_async
from oneclick.cli.tables import Printer
from oneclick.cli.terminal import safe
from oneclick.kits.kube import JSON, ApiError
from oneclick.kits.resources import custom_path

KINDS = {"clusters": "ClusterLaunch", "cluster": "ClusterLaunch", "cl": "ClusterLaunch",
         "clusterlaunches": "ClusterLaunch", "launches": "ClusterLaunch",
         "members": "LaunchMember", "member": "LaunchMember", "lm": "LaunchMember",
         "launchmembers": "LaunchMember"}


def out(text: str) -> None:
    click.echo(safe(text))  # members' own text (host names, messages): no escape sequences


@click.command()
@click.argument("kind", default="clusters", type=click.Choice(sorted(KINDS)),
                metavar="[clusters|members]")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]))
@click.option("--cluster", help="Only the members of this launch (as `occ get members NAME`).")
@scope.options("After listing, print each change as it happens (Ctrl-C stops).")
@click.pass_obj
def get(globals_: Globals, kind: str, name: str | None, output: str | None,
        cluster: str | None, namespace_given: str | None, all_namespaces: bool,
        selector: str | None, watch: bool) -> None:
    """List launches or members, with the same columns as kubectl.

    `occ get members NAME` lists the members of launch NAME (or the member NAME, when no
    launch has that name). A launch's EXPIRES counts down ("in 59m"); `-o wide` adds the
    time itself.

    \b
    Examples:
      occ get                              # every launch in the namespace
      occ get -A                           # ... in every namespace
      occ get members grid                 # the members of launch grid
      occ get -l team=blue -o wide
      occ get -w                           # then a line at every change, until Ctrl-C
      occ get cluster grid -o yaml
    """
    chosen = scope.of(all_namespaces, selector, watch, namespace_given)
    chosen.refuse_name_across_namespaces(name)
    resource = KINDS[kind]

    async def work(session: Session) -> None:
        namespace = chosen.namespace(session.namespace)
        wanted, params = name, chosen.labels()
        if resource == "LaunchMember":
            launch = cluster
            if name and not cluster and await _is_launch(session, name):
                launch, wanted = name, None
            if launch:
                params = chosen.labels(f"{CLUSTER_LABEL}={launch}")
        if output in (None, "wide"):
            await _tables(session, resource, namespace, wanted, params, output == "wide",
                          chosen)
        else:
            await _objects(session, resource, namespace, wanted, params, output or "yaml",
                           chosen)

    run_async(chosen.globals(globals_), work)


async def _is_launch(session: Session, name: str) -> bool:
    try:
        await get_launch(session, name)
    except NotFound:
        return False
    return True


def _nothing(namespace: str | None) -> None:
    click.echo("No resources found" + (f" in {namespace} namespace." if namespace else "."),
               err=True)


async def _tables(session: Session, resource: str, namespace: str | None, name: str | None,
                  params: dict[str, str], wide: bool, chosen: Scope) -> None:
    # Launches come whole: EXPIRES is computed from their status.
    params = {**params, "includeObject": "Object" if resource == "ClusterLaunch" else "Metadata"}
    try:
        table = await session.kube.table(custom_path(resource, namespace, name), **params)
    except ApiError as error:
        if error.status == 404 and name:
            raise click.ClickException(f"{resource.lower()} {name!r} not found in namespace "
                                       f"{namespace!r}") from error
        raise
    printer = Printer(table.get("columnDefinitions", []), wide=wide,
                      namespaces=chosen.all_namespaces, countdown=resource == "ClusterLaunch")
    rows = table.get("rows", [])
    if rows:
        out("\n".join(printer.lines(rows, header=True)))
    elif not chosen.watch:
        _nothing(namespace)
    if not chosen.watch:
        return
    printed = bool(rows)
    version = str(table["metadata"]["resourceVersion"])
    if name:
        params = {**params, "fieldSelector": f"metadata.name={name}"}
    path = custom_path(resource, namespace)
    while True:
        try:
            async for event in follow.events(session.kube, path, version, params, follow.TABLE):
                rows = event["object"].get("rows") or []
                if rows:
                    out("\n".join(printer.lines(rows, header=not printed)))
                    printed = True
        except follow.Gone:  # too long away: list again, as kubectl does
            table = await session.kube.table(path, **params)
            version = str(table["metadata"]["resourceVersion"])
            if table.get("rows"):
                out("\n".join(printer.lines(table["rows"], header=not printed)))
                printed = True


def _render(resource: str, obj: JSON, output: str) -> str:
    if output == "name":
        return f"{resource.lower()}/{obj['metadata']['name']}"
    if output == "json":
        return json.dumps(obj, indent=2)
    return yaml.safe_dump(obj, sort_keys=False).rstrip()


async def _objects(session: Session, resource: str, namespace: str | None, name: str | None,
                   params: dict[str, str], output: str, chosen: Scope) -> None:
    path = custom_path(resource, namespace, name)
    try:
        found = await (session.kube.get(path) if name else session.kube.list(path, **params))
    except ApiError as error:
        if error.status == 404 and name:
            raise click.ClickException(f"{resource.lower()} {name!r} not found in namespace "
                                       f"{namespace!r}") from error
        raise
    if output == "name" and not name:
        out("\n".join(_render(resource, i, output) for i in found.get("items", [])))
    else:
        out(_render(resource, found, output))  # the object, or the whole list
    if not chosen.watch:
        return
    version = str(found["metadata"]["resourceVersion"])
    if name:
        params = {**params, "fieldSelector": f"metadata.name={name}"}
    path = custom_path(resource, namespace)
    while True:
        try:
            async for event in follow.events(session.kube, path, version, params):
                out(("---\n" if output == "yaml" else "")
                    + _render(resource, event["object"], output))
        except follow.Gone:
            listing = await session.kube.list(path, **params)
            version = str(listing["metadata"]["resourceVersion"])
