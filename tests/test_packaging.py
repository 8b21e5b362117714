"""Installed as a user installs it: from the built wheel, into a fresh virtual environment,
nothing of ours is importable under a generic top-level name, and the commands work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from oneclick import __version__
from oneclick.api.protocol import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("api", "agent", "cli", "controller", "controlplane", "kits")


def test_the_wheel_installs_one_import_name_and_working_commands(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True, cwd=tmp_path)
    [wheel] = dist.glob(f"oneclick_clusters-{__version__}-*.whl")  # (the version's one place)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-c", str(ROOT / "hack" / "constraints.txt"), str(wheel)], check=True,
                   cwd=tmp_path)

    def python(code: str) -> str:  # (run outside the repository: only the installed package)
        return subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True,
                              capture_output=True, text=True, cwd=tmp_path).stdout.strip()

    found = python("import importlib.util as u; "
                   f"print([n for n in {GENERIC!r} if u.find_spec(n)])")
    assert found == "[]", f"generic top-level modules installed: {found}"
    assert python("import oneclick.controller.main, oneclick.agent.main; print('ok')") == "ok"
    # The local provider finds its sample image in the installed package, scripts executable.
    script = python("from oneclick.controller.providers.local import default_images_dir as d; "
                    "print(d() / 'base-cluster/etc/oneclick/roles.d/batch-server')")
    assert str(venv) in script and os.access(script, os.X_OK), script
    for command in ("occ", "occ-controller", "occ-agent"):
        done = subprocess.run([str(venv / "bin" / command), "--help"], capture_output=True,
                              text=True, cwd=tmp_path, check=False)
        assert done.returncode == 0 and "usage" in done.stdout.lower(), (command, done.stderr)
    said = subprocess.run([str(venv / "bin" / "occ"), "version"], capture_output=True,
                          text=True, cwd=tmp_path, check=True).stdout
    assert said.strip() == f"occ {__version__} (broker protocol {PROTOCOL_VERSION})"


def test_the_chart_deploys_the_version_of_the_package() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "oneclick" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
