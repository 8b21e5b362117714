"""`occ dev`: a real Kubernetes control plane on this machine, for trying things and tests."""

from __future__ import annotations

import shlex
import sys

import click

import controlplane
from cli import devcontroller


def _fail(error: Exception) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@click.group()
def dev() -> None:
    """Run a local Kubernetes control plane (etcd and kube-apiserver on loopback).

    The binaries are built from the Go module proxy on first use and cached in
    ~/.cache/oneclick (set OCC_CACHE_DIR to move it); the control plane's files live in
    ~/.local/state/oneclick/dev.

    \b
    Examples:
      occ dev up && eval "$(occ dev env)" && kubectl get namespaces
      occ dev down
    """


@dev.command()
@click.option("--controller/--no-controller", default=True, show_default=True,
              help="Also install the CRDs and run occ-controller (local provider).")
def up(controller: bool) -> None:
    """Start the control plane (and the controller), or reuse them; print the kubeconfig.

    \b
    Examples:
      occ dev up                                  # then: occ run --cluster samples/...
      kubectl --kubeconfig "$(occ dev up --no-controller)" get namespaces
    """
    try:
        plane, started = controlplane.up()
    except (controlplane.ControlPlaneError, controlplane.BuildError) as error:
        _fail(error)
        return
    click.echo(f"{'started' if started else 'reusing'} control plane at {plane.server}", err=True)
    if controller:
        try:
            state, fresh = devcontroller.start(plane)
        except RuntimeError as error:
            _fail(error)
            return
        click.echo(f"{'started' if fresh else 'reusing'} occ-controller (pid {state['pid']}, "
                   f"broker port {state['broker_port']}, metrics port "
                   f"{state['metrics_port']}); log: {plane.workdir}/controller.log", err=True)
    click.echo(f"kubeconfig: {plane.kubeconfig}", err=True)
    click.echo('use it with kubectl: eval "$(occ dev env)"', err=True)
    click.echo(str(plane.kubeconfig))


@dev.command()
def down() -> None:
    """Terminate every launch, stop the controller and the control plane, remove their data.

    \b
    Example:
      occ dev down
    """
    plane = controlplane.ControlPlane.load(controlplane.default_workdir())
    if plane is not None and plane.alive():
        devcontroller.stop(plane)
    if controlplane.down():
        click.echo("control plane stopped", err=True)
    else:
        click.echo("no control plane was running", err=True)


@dev.command()
def env() -> None:
    """Print `export KUBECONFIG=...` for the running control plane, for a shell to eval.

    \b
    Example:
      eval "$(occ dev env)" && kubectl get clusterlaunches
    """
    plane = controlplane.running()
    if plane is None:
        _fail(RuntimeError("no control plane is running; start one with `occ dev up`"))
        return
    click.echo(f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}")


@dev.command()
def build() -> None:
    """Build (or find in the cache) kube-apiserver, kubectl and etcd, and print their paths.

    \b
    Example:
      OCC_CACHE_DIR=/var/cache/oneclick occ dev build
    """
    try:
        paths = controlplane.ensure_binaries()
    except controlplane.BuildError as error:
        _fail(error)
        return
    for name, path in sorted(paths.items()):
        click.echo(f"{name}\t{path}")
