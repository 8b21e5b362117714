"""What pyproject.toml leaves dynamic in oneclick-clusters: its packages, dependencies and
commands, which differ between a release and a checkout's editable install (see
distributions/oneclick_build.py, the build backend that says which one is being built)."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
PROJECT = tomllib.loads((HERE / "pyproject.toml").read_text())
AGENT = HERE / "distributions" / "oneclick-agent" / "pyproject.toml"
VERSION = next(line.split('"')[1] for line in (HERE / "oneclick" / "__init__.py").open()
               if line.startswith("__version__"))

# Ours, on top of the agent's (its pyproject.toml).
DEPENDENCIES: list[str] = PROJECT["tool"]["oneclick-clusters"]["dependencies"]
COMMANDS = {
    "occ": "oneclick.cli.main:main",
    "kubectl-occ": "oneclick.cli.main:main",
    "occ-controller": "oneclick.controller.main:main",
}
AGENT_COMMANDS = {"occ-agent": "oneclick.agent.main:main"}  # (oneclick-agent's command)
# What oneclick-agent ships; oneclick-clusters (released) does not.
AGENT_PACKAGES = ("oneclick", "oneclick.api", "oneclick.agent")

options: dict[str, dict[str, str]] = {}
editable = bool(getattr(sys.modules.get("oneclick_build"), "EDITABLE", False))
packages = find_namespace_packages(include=["oneclick", "oneclick.*"])  # (as packages.find)
if editable:  # the whole checkout
    requires = [*tomllib.loads(AGENT.read_text())["project"]["dependencies"], *DEPENDENCIES]
    commands = {**COMMANDS, **AGENT_COMMANDS}
else:
    packages = [p for p in packages
                if not any(p == a or (a != "oneclick" and p.startswith(a + "."))
                           for a in AGENT_PACKAGES)]
    requires = [f"oneclick-agent=={VERSION}", *DEPENDENCIES]
    commands = COMMANDS
    # A build directory of its own: a checkout's build/ keeps what earlier builds put there
    # (the agent's modules among them, which would come back into this wheel), and is shared
    # by whoever builds in the same tree at the same time.
    options["build"] = {"build_base": tempfile.mkdtemp(prefix="oneclick-clusters-build-")}
    atexit.register(shutil.rmtree, options["build"]["build_base"], ignore_errors=True)

setup(
    options=options,
    packages=packages,
    install_requires=requires,
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in
                                      commands.items()]},
)
