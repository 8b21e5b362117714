"""`occ ssh`: log in to a member, or run a command on it, trusting only its known host keys.

What follows `--` is the command, always: `occ ssh grid -- hostname` runs `hostname` on the
head node, `occ ssh grid compute-nodes-1 -- hostname` on that member.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from oneclick.cli import known_hosts
from oneclick.cli.launches import (
    NotFound,
    find_member,
    get_launch,
    head,
    in_launch_order,
    members,
    short_name,
)
from oneclick.cli.session import Globals, Session, run_async


class _CommandAfterDashes(click.Command):
    """Everything after the first `--` is the remote command, never NAME or MEMBER (click
    alone would hand it to the first free argument)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            args, ctx.meta["occ.ssh.command"] = args[:at], tuple(args[at + 1:])
        return super().parse_args(ctx, args)


@click.command(cls=_CommandAfterDashes, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("member", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-l", "--user", default="root", show_default=True,
              help="Account to log in as.")
@click.option("--known-hosts", "known_hosts_file", type=click.Path(path_type=Path),
              help="known_hosts file to trust (default: ssh's own).")
@click.option("-i", "--identity-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Private key to log in with (default: ssh's own choice).")
@click.pass_context
def ssh(ctx: click.Context, name: str, member: str | None, command: tuple[str, ...], user: str,
        known_hosts_file: Path | None, identity_file: Path | None) -> None:
    """Log in to a member of launch NAME (its head node by default), or run a command there.

    MEMBER is a member's name, or its role and index (compute-nodes-1), or a role that has
    one member. Everything after `--` is the command to run. Connects to the address the
    member's provider reported and checks the host key under the member's alias
    (ROLE-INDEX.LAUNCH.NAMESPACE.oneclick, the name `occ run` and `occ known-hosts` put its
    keys under), with strict host key checking.

    \b
    Examples:
      occ ssh grid                                # a shell on the head node
      occ ssh grid -- hostname                    # a command on the head node
      occ ssh grid compute-nodes-1 -- uptime      # a command on another member
      occ ssh grid compute-nodes-1 -i ~/.ssh/lab -- ls -l /etc/oneclick
    """
    after_dashes = ctx.meta.get("occ.ssh.command")
    if after_dashes is not None:
        if command:  # occ ssh grid member extra -- cmd: "extra" is neither
            raise click.UsageError(f"unexpected {command[0]!r} before '--': give NAME, "
                                   "optionally MEMBER, then -- COMMAND")
        command = after_dashes
    if user.startswith("-"):
        raise click.BadParameter("an account name does not start with '-'", param_hint="--user")
    globals_: Globals = ctx.obj

    async def work(session: Session) -> tuple[str, str | None]:
        try:
            launch = await get_launch(session, name)
        except NotFound as error:
            raise click.ClickException(str(error)) from error
        found = in_launch_order(launch, await members(session, name))
        chosen = find_member(name, found, member) if member else head(launch, found)
        if chosen is None:
            known = ", ".join(short_name(m) for m in found) or "none yet"
            raise click.ClickException(
                f"{name} has no member {member!r} (its members: {known})" if member else
                f"{name} has no head node yet (its members: {known})")
        addresses = known_hosts.provider_addresses(chosen)
        if not addresses:
            raise click.ClickException(
                f"{chosen['metadata']['name']} has no address yet (phase "
                f"{(chosen.get('status') or {}).get('phase', 'Pending')}): occ wait {name}")
        return addresses[0], known_hosts.alias(chosen)

    target, alias = run_async(globals_, work)
    binary = shutil.which("ssh")
    if binary is None:
        raise click.ClickException("ssh is not installed (openssh-client)")
    argv = [binary, "-o", "StrictHostKeyChecking=yes"]
    if alias:
        argv += ["-o", f"HostKeyAlias={alias}"]
    if known_hosts_file:
        argv += ["-o", f"UserKnownHostsFile={known_hosts_file}"]
    if identity_file:
        argv += ["-i", str(identity_file)]
    # ("--" after the destination: ssh reads options there too, and the command is not one.)
    os.execv(binary, [*argv, f"{user}@{target}", *(["--", *command] if command else [])])  # noqa: S606
