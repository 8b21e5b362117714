"""Acting on launches: `occ terminate`, `data set`, `convert`, `completion` (`ssh` is in
ssh)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import click
import yaml

from oneclick.cli.documents import DocumentError, dns_name, load
from oneclick.cli.launches import NotFound, get_launch, members
from oneclick.cli.session import Globals, Session, run_async
from oneclick.kits.kube import ApiError
from oneclick.kits.resources import custom_path


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until every instance is terminated.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.pass_obj
def terminate(globals_: Globals, names: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Terminate launches: every instance ends, then the launch goes.

    \b
    Example:
      occ terminate grid
    """

    async def work(session: Session) -> int:
        for name in names:
            try:
                await session.kube.delete(custom_path("ClusterLaunch", session.namespace, name))
            except ApiError as error:
                if error.status == 404:
                    raise click.ClickException(f"clusterlaunch {name!r} not found") from error
                raise
            click.echo(f"terminating {name}", err=True)
        deadline = time.monotonic() + timeout
        for name in names if wait else ():
            while True:
                try:
                    left = len(await members(session, name))
                    await get_launch(session, name)
                except NotFound:
                    click.echo(f"{name} terminated", err=True)
                    break
                if time.monotonic() > deadline:
                    click.echo(f"error: {name} still has {left} members", err=True)
                    return 1
                await asyncio.sleep(1.0)
        return 0

    sys.exit(run_async(globals_, work))


@click.group()
def data() -> None:
    """Send data to a launch's context."""


@data.command(name="set")
@click.argument("name")
@click.argument("key")
@click.option("--value", help="The data itself.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the data from this file.")
@click.pass_obj
def data_set(globals_: Globals, name: str, key: str, value: str | None,
             from_file: Path | None) -> None:
    """Set data item KEY of launch NAME; members that require it receive it.

    \b
    Examples:
      occ data set grid gridmap --from-file ./grid-mapfile
      occ data set grid motd --value "welcome"
    """
    if (value is None) == (from_file is None):
        raise click.UsageError("give exactly one of --value and --from-file")
    content = value if value is not None else from_file.read_text()  # type: ignore[union-attr]

    async def work(session: Session) -> None:
        launch = await get_launch(session, name)
        items = [i for i in launch["spec"].get("data", []) if i["name"] != key]
        items.append({"name": key, "value": content})
        await session.kube.merge_patch(custom_path("ClusterLaunch", session.namespace, name),
                                       {"spec": {"data": items}})
        click.echo(f"{name}: data {key} set ({len(content)} characters)", err=True)

    run_async(globals_, work)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="metadata.name (default: the file's name).")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True)
def convert(file: Path, name: str | None, output: str) -> None:
    """Convert a Nimbus cluster document (XML) to a ClusterLaunch.

    \b
    Example:
      occ convert samples/base-cluster.xml > base-cluster.yaml
    """
    try:
        document = load(file)
    except DocumentError as error:
        raise click.ClickException(str(error)) from error
    document["metadata"] = {"name": name or dns_name(file.stem)}
    click.echo(json.dumps(document, indent=2) if output == "json"
               else yaml.safe_dump(document, sort_keys=False).rstrip())


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script.

    \b
    Example:
      source <(occ completion bash)
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    if completer is None:
        raise click.ClickException(f"no completion for {shell}")
    occ = click.get_current_context().find_root().command  # (the group this command is in)
    click.echo(completer(occ, {}, "occ", "_OCC_COMPLETE").source())
