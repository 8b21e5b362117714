"""The `occ` command: global options, like kubectl's, and its sub-commands."""

from __future__ import annotations

from pathlib import Path

import click

from oneclick import __version__
from oneclick.api.protocol import PROTOCOL_VERSION
from oneclick.cli import dev, get, inspect, manage, run, ssh
from oneclick.cli.session import Globals


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the control "
                   "plane of `occ dev up`).")
@click.option("--context", help="Kubeconfig context to use.")
@click.option("-n", "--namespace", help="Namespace of the launches (default: the context's).")
@click.pass_context
def occ(ctx: click.Context, kubeconfig: Path | None, context: str | None,
        namespace: str | None) -> None:
    """Launch self-configuring clusters of virtual machines.

    A launch (ClusterLaunch) starts one member per role instance; every member learns the
    addresses, host names and SSH host keys of the others from the context broker and
    configures itself; you log in with the host keys already trusted.

    \b
    Examples:
      occ dev up                                          # a control plane and controller here
      occ run --hours 1 --cluster samples/base-cluster.yaml
      occ get clusters -A
      occ ssh cluster-x7k2p -- hostname
      occ terminate cluster-x7k2p
    """
    ctx.obj = Globals(kubeconfig=kubeconfig, context=context, namespace=namespace)


@occ.command()
def version() -> None:
    """Print the version of occ."""
    click.echo(f"occ {__version__} (broker protocol {PROTOCOL_VERSION})")


for command in (run.run, get.get, inspect.describe, inspect.wait, inspect.logs,
                inspect.known_hosts_command, manage.terminate, manage.data, ssh.ssh,
                manage.convert, manage.completion, dev.dev):
    occ.add_command(command)
occ.add_command(manage.terminate, name="delete")


def main() -> None:
    occ(prog_name="occ")
