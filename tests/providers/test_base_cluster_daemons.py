"""The base cluster image starts its daemons by hand where there is no systemd (a member of the
local provider, a machine of the ssh provider's pool without it): its lib/services.sh starts,
restarts and stops them by their pid files. A daemon detaches at once but writes its pid file
only once it serves, and on a stop removes it before it lets go of its port (slurmd does both).
Here `lazyd` does the same (named apart in each test), and each call is the one the role and
uninstall scripts make."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneclick.controlplane.local import free_port
from tests.controller.launches import wait_until

SERVICES = (Path(__file__).parents[2] / "oneclick/controller/providers/local/images"
            / "base-cluster/etc/oneclick/lib/services.sh")

LAZYD = """#!{python}
import os, signal, socket, sys, time
pidfile, port, starts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if os.fork():
    os._exit(0)  # detached: whoever started it goes on
os.setsid()
with open(starts, "a") as log:
    log.write("started\\n")
time.sleep(1)  # its plugins load
server = socket.socket()
try:
    server.bind(("127.0.0.1", port))
except OSError:
    sys.exit(1)  # "Unable to bind listen port": another one serves
server.listen()

def stop(*_):
    os.unlink(pidfile)
    time.sleep(0.5)  # its threads finish: the port is still held
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
with open(pidfile, "w") as named:
    named.write(f"{{os.getpid()}}\\n")
while True:
    time.sleep(60)
"""


@dataclass
class Daemon:
    name: str
    command: str  # what starts it, for the scripts
    pidfile: Path
    port: int
    starts: Path  # a line each time it was started

    def services(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run `script` as the role and uninstall scripts do: with services.sh sourced (on a
        machine without systemd, whatever this one has)."""
        return subprocess.run(["sh", "-ec", f"{self.sourced}\n{script}"], capture_output=True,
                              text=True, timeout=60, check=False)

    @property
    def sourced(self) -> str:
        return f". {SERVICES}\nwith_systemd() {{ false; }}"

    @property
    def restart(self) -> str:
        """How the role scripts (re)start it."""
        return f"restart {self.name} {self.pidfile} {self.name} {self.command}"

    def processes(self) -> list[int]:
        """Its processes that run (not ended)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if (entry.name.isdigit() and (entry / "comm").read_text().strip() == self.name
                        and (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z"):
                    found.append(int(entry.name))
            except OSError:
                continue  # ended while looked at
        return found


@pytest.fixture
def lazyd(tmp_path: Path) -> Iterator[Daemon]:
    name = "lazyd-" + os.urandom(3).hex()  # (its own: an uninstall stops all of its name)
    program = tmp_path / name
    program.write_text(LAZYD.format(python=sys.executable))
    program.chmod(0o755)
    pidfile, starts, port = tmp_path / f"{name}.pid", tmp_path / "starts", free_port()
    daemon = Daemon(name, f"{program} {pidfile} {port} {starts}", pidfile, port, starts)
    yield daemon
    for pid in daemon.processes():
        os.kill(pid, signal.SIGKILL)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_daemon_looked_for_right_after_its_start_is_not_started_twice(lazyd: Daemon) -> None:
    # What restarts.d/batch-server does: start slurmd, then start it again while it does not
    # run. A second start removed the first one's pid file as it was written: a slurmd that
    # nothing could find to stop served on after the launch.
    ran = lazyd.services(f"{lazyd.restart}\n"
                         f"running {lazyd.pidfile} {lazyd.name} || {lazyd.restart}")
    assert ran.returncode == 0, ran.stderr
    assert lazyd.starts.read_text().splitlines() == ["started"]
    assert lazyd.processes() == [int(lazyd.pidfile.read_text())]


def test_a_stopped_daemon_has_let_go_of_its_port(lazyd: Daemon) -> None:
    # A restart starts the new one right after the stop: it must find the port free.
    ran = lazyd.services(f"{lazyd.restart}\nstop {lazyd.pidfile} {lazyd.name}")
    assert ran.returncode == 0, ran.stderr
    assert port_free(lazyd.port)
    assert lazyd.processes() == [] and not lazyd.pidfile.exists()


def test_the_uninstall_stops_a_daemon_that_has_not_named_itself_yet(lazyd: Daemon) -> None:
    # The machine is given back just as its agent started the daemon: the ssh provider kills
    # the agent's session, then uninstalls, before the daemon writes its pid file.
    agent = subprocess.Popen(
        ["sh", "-ec", f"{lazyd.sourced}\n{lazyd.restart}"], start_new_session=True,
        stdout=subprocess.DEVNULL)
    wait_until(lambda: lazyd.starts.exists(), timeout=10, what="the daemon started")
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    assert not lazyd.pidfile.exists() and lazyd.processes()

    ran = lazyd.services(f"stop_for_good {lazyd.pidfile} {lazyd.name}")
    assert ran.returncode == 0, ran.stderr
    time.sleep(1.2)  # (when it would have written its pid file)
    assert lazyd.processes() == [] and not lazyd.pidfile.exists()


def test_the_uninstall_leaves_alone_a_daemon_of_that_name_it_did_not_start(
        lazyd: Daemon, tmp_path: Path) -> None:
    # The machine's own (a user's munged, say, with its own pid file) shares the machine's
    # network namespace.
    own = tmp_path / "own.pid"
    subprocess.run(["sh", "-c", lazyd.command.replace(str(lazyd.pidfile), str(own))
                    + " </dev/null >/dev/null 2>&1"], check=True)
    wait_until(lambda: own.exists(), timeout=10, what="the machine's daemon serving")

    ran = lazyd.services(f"stop_for_good {lazyd.pidfile} {lazyd.name}")
    assert ran.returncode == 0, ran.stderr
    assert own.exists(), "the machine's own daemon was stopped"
    assert lazyd.processes() == [int(own.read_text())]
