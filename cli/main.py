"""The `occ` command: global options, like kubectl's, and its sub-commands."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version as distribution_version
from pathlib import Path

import click

from cli import dev


@dataclass
class Globals:
    """What every sub-command may need: where the cluster is and which namespace to use."""

    kubeconfig: Path | None
    context: str | None
    namespace: str | None


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              envvar="KUBECONFIG", help="Kubeconfig file to use (default: $KUBECONFIG).")
@click.option("--context", help="Kubeconfig context to use.")
@click.option("-n", "--namespace", help="Namespace of the launch (default: the context's).")
@click.pass_context
def occ(ctx: click.Context, kubeconfig: Path | None, context: str | None,
        namespace: str | None) -> None:
    """Launch self-configuring clusters of virtual machines.

    \b
    Examples:
      occ dev up                      # a local Kubernetes control plane for trying things out
      eval "$(occ dev env)"           # point kubectl and occ at it
    """
    ctx.obj = Globals(kubeconfig=kubeconfig, context=context, namespace=namespace)


@occ.command()
def version() -> None:
    """Print the version of occ."""
    click.echo(f"occ {distribution_version('oneclick-clusters')}")


occ.add_command(dev.dev)


def main() -> None:
    occ(prog_name="occ")
