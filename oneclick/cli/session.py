"""Which cluster and namespace a command talks to, as kubectl would choose them; and, when no
cluster is configured at all, the development control plane of `occ dev up`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click

from oneclick import controlplane
from oneclick.kits.kube import ApiError, KubeClient

T = TypeVar("T")


@dataclass
class Globals:
    """What every sub-command may need: where the cluster is and which namespace to use."""

    kubeconfig: Path | None
    context: str | None
    namespace: str | None


def _kubeconfig(globals_: Globals) -> Path | None:
    if globals_.kubeconfig or os.environ.get("KUBECONFIG"):
        return globals_.kubeconfig
    if (Path.home() / ".kube" / "config").exists():
        return None
    plane = controlplane.running()
    if plane is None:
        raise click.ClickException(
            "no cluster is configured (no --kubeconfig, $KUBECONFIG or ~/.kube/config) and no "
            "development control plane is running: start one with `occ dev up`")
    return plane.kubeconfig


@dataclass
class Session:
    kube: KubeClient
    namespace: str

    @classmethod
    def open(cls, globals_: Globals) -> Session:
        try:
            kube = KubeClient(_kubeconfig(globals_), globals_.context)
        except Exception as error:  # the kubernetes package raises several kinds
            raise click.ClickException(f"cannot use the kubeconfig: {error}") from error
        return cls(kube, globals_.namespace or kube.namespace)


def run_async(globals_: Globals, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run one command's async work with a session, turning API errors into clear ones."""

    async def main() -> T:
        session = Session.open(globals_)
        try:
            return await work(session)
        finally:
            await session.kube.aclose()

    try:
        return asyncio.run(main())
    except ApiError as error:
        raise click.ClickException(str(error.reason)) from error
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
