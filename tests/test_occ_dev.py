"""`occ dev up / env / down`, as a person uses them from a shell."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from kits.processes import running


def occ(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["occ", *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def test_up_env_reuse_and_down(binaries: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path))
    env.pop("KUBECONFIG", None)

    first = occ("dev", "up", env=env)
    try:
        _walk_through(first, tmp_path, env)
    finally:
        occ("dev", "down", env=env)


def _walk_through(first: subprocess.CompletedProcess[str], tmp_path: Path,
                  env: dict[str, str]) -> None:
    assert first.returncode == 0, first.stderr
    assert "started control plane" in first.stderr
    kubeconfig = Path(first.stdout.strip())
    assert kubeconfig.is_file()

    exported = occ("dev", "env", env=env)
    assert exported.stdout.strip() == f"export KUBECONFIG={shlex.quote(str(kubeconfig))}"
    shell = subprocess.run(
        ["bash", "-c", 'eval "$(occ dev env)" && kubectl get --raw /readyz'],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert shell.stdout.strip() == "ok", shell.stderr

    again = occ("dev", "up", env=env)
    assert again.returncode == 0 and "reusing control plane" in again.stderr
    assert again.stdout.strip() == str(kubeconfig)

    state = (tmp_path / "oneclick" / "dev" / "state.json").read_text()
    assert occ("dev", "down", env=env).returncode == 0
    assert not (tmp_path / "oneclick" / "dev").exists()
    gone = occ("dev", "env", env=env)
    assert gone.returncode == 1 and "no control plane is running" in gone.stderr
    for key in ("etcd_pid", "apiserver_pid"):
        pid = int(state.split(f'"{key}": ')[1].split(",")[0])
        assert not running(pid)
