"""`occ-agent`: contextualize this member."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from oneclick.agent import hostkeys, log, uninstall
from oneclick.agent.bootstrap import METADATA_URL
from oneclick.agent.run import OK, Options, contextualize

EPILOG = """examples:
  occ-agent                                  # in a VM: bootstrap from the user data
  occ-agent --follow                         # ... and reconfigure on scale up and down
  occ-agent --bootstrap /run/occ/bootstrap.json --root /srv/member1 \\
            --hostname member1 --address 10.0.0.5

exit codes: 0 contextualized, 1 failed (and reported), 2 no bootstrap, 3 refused by the broker
"""


def parse(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="occ-agent", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Learn this member's context from the OneClick context broker and configure "
                    "the member for its role: /etc/hosts, host-based SSH, the user's keys, the "
                    "image's role scripts. The context is left in /var/lib/oneclick/.")
    parser.add_argument("--bootstrap", type=Path, help="bootstrap file (default: cloud-init's "
                        "user data, then the EC2 and OpenStack metadata services)")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="the member's root directory (default: /)")
    parser.add_argument("--hostname", help="short host name (default: this host's)")
    parser.add_argument("--fqdn", help="fully qualified name (default: this host's)")
    parser.add_argument("--address", action="append", default=[], dest="addresses",
                        help="an address to offer the others (repeatable; default: every "
                             "non-loopback address)")
    parser.add_argument("--metadata-url", default=METADATA_URL, help=argparse.SUPPRESS)
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds the broker may hold each context request (default 30)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="give up after this many seconds (default 1800)")
    parser.add_argument("--script-timeout", type=float, default=300.0,
                        help="seconds each role script may run (default 300)")
    parser.add_argument("--follow", action="store_true",
                        help="after contextualizing, stay and configure the member again each "
                             "time members are added to the launch or removed from it (a "
                             "member already configured for the current context skips its "
                             "first pass); ends when the launch does")
    parser.add_argument("--ready-fd", type=int, metavar="FD",
                        help="once the member is configured, write a line to this open file "
                             "descriptor and close it (for a supervisor that waits, as s6's "
                             "notification-fd; with --follow, before following)")
    parser.add_argument("--host-keys-only", action="store_true",
                        help="make sure SSH host keys exist, then stop (for boot, before sshd)")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove everything the agent installed (managed blocks, drop-ins, "
                             "keys, the context), then stop")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.ready_fd is not None:
        try:
            os.fstat(args.ready_fd)
        except OSError:
            parser.error(f"--ready-fd {args.ready_fd}: no such open file descriptor")
    options = Options(root=args.root, bootstrap=args.bootstrap, hostname=args.hostname,
                      fqdn=args.fqdn, addresses=args.addresses, metadata_url=args.metadata_url,
                      wait=args.wait, timeout=args.timeout, script_timeout=args.script_timeout,
                      follow=args.follow, ready_fd=args.ready_fd)
    return options, args


def main(argv: list[str] | None = None) -> None:
    options, args = parse(argv)
    if args.host_keys_only:
        hostkeys.ensure(options.root)
        sys.exit(OK)
    if args.uninstall:
        sys.exit(_uninstall(options.root))
    uninstall.record(options.root)  # what was there before: uninstall gives it back
    tail = log.setup(options.root, args.verbose)
    sys.exit(asyncio.run(contextualize(options, tail)))


def _uninstall(root: Path) -> int:
    try:
        for line in uninstall.uninstall(root):
            print(line)
    except OSError as error:
        print(f"occ-agent: uninstall: {error}", file=sys.stderr)
        return 1
    return OK
