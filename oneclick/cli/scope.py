"""Which objects a command looks at, chosen as kubectl chooses them: -n/--namespace (global),
-A/--all-namespaces, -l/--selector; and -w/--watch to keep looking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click

from oneclick.cli.session import Globals

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Scope:
    all_namespaces: bool
    selector: str | None
    watch: bool
    namespace_given: str | None = None  # -n after the command, as kubectl takes it too

    def globals(self, given: Globals) -> Globals:
        return replace(given, namespace=self.namespace_given) if self.namespace_given else given

    def namespace(self, default: str) -> str | None:
        """The namespace to read (None: every namespace)."""
        return None if self.all_namespaces else default

    def labels(self, *more: str) -> dict[str, str]:
        """labelSelector of the user's selector and `more` requirements, as request params."""
        wanted = [s for s in (self.selector, *more) if s]
        return {"labelSelector": ",".join(wanted)} if wanted else {}

    def refuse_name_across_namespaces(self, name: str | None) -> None:
        if name and self.all_namespaces:
            raise click.UsageError("a name cannot be looked up across all namespaces: drop -A, "
                                   "or drop the name (and select with -l)")


def options(watch_help: str) -> Callable[[F], F]:
    """-A, -l and -w on a command, handed to it as `scope`."""

    def decorate(command: F) -> F:
        command = click.option("-w", "--watch", is_flag=True, help=watch_help)(command)
        command = click.option("-l", "--selector",
                               help="Label selector, as kubectl's (team=blue,tier!=gpu).")(command)
        command = click.option("-A", "--all-namespaces", is_flag=True,
                               help="Every namespace, not only the current one.")(command)
        command = click.option("-n", "--namespace", "namespace_given",
                               help="Namespace (as occ's own -n, here too).")(command)
        return command

    return decorate


def of(all_namespaces: bool, selector: str | None, watch: bool,
       namespace_given: str | None) -> Scope:
    return Scope(all_namespaces, selector or None, watch, namespace_given)
