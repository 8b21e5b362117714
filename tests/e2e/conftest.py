"""The user of the walkthrough: an SSH key of their own, occ on their PATH, a fresh
known_hosts file and history directory."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.controller_process import ControllerProcess


@dataclass
class User:
    home: Path
    key: Path
    known_hosts: Path
    history: Path
    env: dict[str, str]

    @property
    def occ_binary(self) -> str:
        return str(Path(sys.executable).parent / "occ")

    def occ(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.occ_binary, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)

    def ssh(self, address: str, *command: str,
            known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
        """ssh as root that refuses any host key not already trusted, and never prompts."""
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
             "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
             f"root@{address}", *command],
            capture_output=True, text=True, timeout=60, check=False)

    def scp(self, source: str, target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["scp", "-r", "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "GlobalKnownHostsFile=/dev/null", source, str(target)],
            capture_output=True, text=True, timeout=60, check=False)


def make_user(root: Path, kubeconfig: Path) -> User:
    """A user with a home of their own under `root`: an SSH key, occ pointed at the cluster."""
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    env.pop("XDG_STATE_HOME", None)
    return User(home=home, key=key, known_hosts=home / ".ssh" / "known_hosts",
                history=home / "history", env=env)


@pytest.fixture
def user(controller: ControllerProcess, kubeconfig: Path, tmp_path: Path) -> User:
    return make_user(tmp_path, kubeconfig)
