"""`occ dev`: a real Kubernetes control plane on this machine, for trying things and tests."""

from __future__ import annotations

import shlex
import sys

import click

from oneclick import controlplane
from oneclick.cli import devcontroller
from oneclick.controlplane import agent_bundle


def _fail(error: Exception) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@click.group()
def dev() -> None:
    """Run a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager on
    loopback): namespaces are deleted and owner references collected, as in a real cluster.

    The binaries are built from the Go module proxy on first use and cached in
    ~/.cache/oneclick (set OCC_CACHE_DIR to move it); the control plane's files live in
    ~/.local/state/oneclick/dev.

    \b
    Examples:
      occ dev up && eval "$(occ dev env)" && kubectl get namespaces
      occ dev down
    """


@dev.command()
@click.option("--controller/--no-controller", default=None,
              help="Also install the CRDs and run occ-controller (local provider) on this "
                   "machine. Default: yes, unless --node (then the chart runs it in a pod).")
@click.option("--node", "with_node", is_flag=True,
              help="Also run a node on this machine (containerd, kube-proxy, a kubelet; root "
                   "only) with the controller's image built and imported, for `helm install`.")
@click.option("--agent/--no-agent", "serve_agent", default=True,
              help="The controller serves the agent as one file (oneclick-agent.pyz, built "
                   "from these sources the first time, then cached) to members whose image "
                   "has none: stock images, ssh hosts with python3 alone. Default: yes (an "
                   "OCC_AGENT_BUNDLE of the environment is served instead of a build).")
def up(controller: bool | None, with_node: bool, serve_agent: bool) -> None:
    """Start the control plane (and the controller), or reuse them; print the kubeconfig.

    \b
    Examples:
      occ dev up                                  # then: occ run --cluster samples/...
      kubectl --kubeconfig "$(occ dev up --no-controller)" get namespaces
      occ dev up --node && helm install occ charts/oneclick ...   # see docs/helm.md
    """
    try:
        plane, started = controlplane.up(with_node=with_node)
    except (controlplane.ControlPlaneError, controlplane.BuildError) as error:
        _fail(error)
        return
    click.echo(f"{'started' if started else 'reusing'} control plane at {plane.server}", err=True)
    if with_node:
        try:
            node, fresh = controlplane.up_node(plane)
        except (controlplane.ControlPlaneError, controlplane.BuildError) as error:
            _fail(error)
            return
        click.echo(f"{'started' if fresh else 'reusing'} node {node.name} ({node.address}); "
                   f"its logs: {node.workdir}", err=True)
    if controller if controller is not None else not with_node:
        try:
            state, fresh = devcontroller.start(plane, agent=serve_agent)
        except RuntimeError as error:
            _fail(error)
            return
        click.echo(f"{'started' if fresh else 'reusing'} occ-controller (pid {state['pid']}, "
                   f"broker port {state['broker_port']}, metrics port "
                   f"{state['metrics_port']}); log: {plane.workdir}/controller.log", err=True)
        if fresh and plane.workdir is not None:
            served = devcontroller.served_agent(plane.workdir, serve_agent)
            click.echo(f"it serves the agent file {served} to members whose image has none"
                       if served else "it serves no agent file (--no-agent): only images "
                       "that carry the agent can launch", err=True)
        elif plane.workdir is not None and (
                differs := devcontroller.agent_differs(plane.workdir, serve_agent)):
            click.echo(f"note: {differs}. To change that, stop the controller (kill "
                       f"{state['pid']}: its launches carry on, though members still booting "
                       f"expect the file they were told of) and run occ dev up again", err=True)
    click.echo(f"kubeconfig: {plane.kubeconfig}", err=True)
    click.echo('use it with kubectl: eval "$(occ dev env)"', err=True)
    click.echo(str(plane.kubeconfig))


@dev.command()
def down() -> None:
    """Terminate every launch; stop the controller, the node and the control plane; remove
    their data.

    \b
    Example:
      occ dev down
    """
    plane = controlplane.ControlPlane.load(controlplane.default_workdir())
    if plane is not None and plane.ready():  # (even with a process of it gone)
        devcontroller.stop(plane)
    try:
        stopped = controlplane.down()
    except controlplane.ControlPlaneError as error:  # (a node that left something behind)
        _fail(error)
        return
    if stopped:
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
@click.option("--image", "with_image", is_flag=True,
              help="Also build the controller's image from the Dockerfile (on a Debian base "
                   "made here; root, podman and mmdebstrap needed) and print its archive.")
@click.option("--agent", "with_agent", is_flag=True,
              help="Also build the single-file agent, oneclick-agent.pyz (runs with python3 "
                   "alone: docs/agent-on-images.md), and print its path.")
def build(with_image: bool, with_agent: bool) -> None:
    """Build (or find in the cache) the control plane's binaries and helm; print their paths.

    \b
    Examples:
      OCC_CACHE_DIR=/var/cache/oneclick occ dev build
      occ dev build --image     # ... and docker.io/oneclick/occ-controller:VERSION
      occ dev build --agent     # ... and oneclick-agent.pyz
    """
    try:
        paths = controlplane.ensure_binaries()
        built = controlplane.image.controller_image() if with_image else None
        bundle = agent_bundle.build() if with_agent else None
    except (controlplane.BuildError, agent_bundle.BundleError) as error:
        _fail(error)
        return
    if bundle is not None:
        click.echo(f"oneclick-agent\t{bundle}")
    for name, path in sorted(paths.items()):
        click.echo(f"{name}\t{path}")
    if built is not None:
        click.echo(f"{built.reference}\t{built.archive}")
