"""Installed as users install it: the release artefacts of both distributions built with
`python -m build` and accepted by twine; a fresh virtual environment with oneclick-clusters
from its wheel (which brings oneclick-agent along) has one import name of ours and working
commands; a fresh virtual environment with only oneclick-agent contextualizes a member against
the real broker without any of the operator's libraries."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from oneclick import __version__
from oneclick.api.protocol import PROTOCOL_VERSION
from tests.broker.staging import contextualize_alone
from tests.controller_process import ControllerProcess

ROOT = Path(__file__).resolve().parent.parent
AGENT_PROJECT = ROOT / "distributions" / "oneclick-agent"
CONSTRAINTS = ROOT / "hack" / "constraints.txt"
GENERIC = ("api", "agent", "cli", "controller", "controlplane", "kits")
OPERATOR_ONLY = ("kopf", "kubernetes", "boto3", "asyncssh")
Python = Callable[[str], str]


@pytest.fixture(autouse=True)
def nothing_of_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tests start sees only what is installed in its environment."""
    monkeypatch.delenv("PYTHONPATH", raising=False)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a release uploads: `python -m build` of each distribution (an sdist, and the
    wheel built from that sdist), into one folder."""
    dist = tmp_path_factory.mktemp("dist")
    for project in (ROOT, AGENT_PROJECT):
        subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(project)],
                       check=True, capture_output=True, cwd=dist)
    return dist


def fresh_venv(where: Path, *install: str) -> Python:
    """A virtual environment with `install` (pip's arguments) and nothing of the checkout's;
    returns what runs Python code in it (outside the repository)."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-c", str(CONSTRAINTS), *install], check=True, cwd=where)

    def python(code: str) -> str:
        done = subprocess.run([str(venv / "bin" / "python"), "-c", code], check=False,
                              capture_output=True, text=True, cwd=where)
        assert done.returncode == 0, f"{code}: {done.stderr}"
        return done.stdout.strip()

    return python


def wheel(dist: Path, name: str) -> Path:
    [found] = dist.glob(f"{name}-{__version__}-py3-none-any.whl")  # (the version's one place)
    return found


def requirements(built: Path) -> list[str]:
    with zipfile.ZipFile(built) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]


def installed_files(built: Path) -> set[str]:
    with zipfile.ZipFile(built) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def test_each_distribution_has_an_sdist_and_a_wheel_that_twine_accepts(released: Path) -> None:
    names = sorted(p.name for p in released.iterdir())
    assert names == [f"oneclick_agent-{__version__}-py3-none-any.whl",
                     f"oneclick_agent-{__version__}.tar.gz",
                     f"oneclick_clusters-{__version__}-py3-none-any.whl",
                     f"oneclick_clusters-{__version__}.tar.gz"], names
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                              *sorted(str(p) for p in released.iterdir())],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 4, checked.stdout

    agent, clusters = wheel(released, "oneclick_agent"), wheel(released, "oneclick_clusters")
    # The agent needs three libraries; the operator needs the agent at its own version.
    assert sorted(requirements(agent)) == ["cryptography>=42", "httpx>=0.27", "pydantic>=2.7"]
    assert f"oneclick-agent=={__version__}" in requirements(clusters)
    # Together they install every module of the checkout, each exactly once.
    shared = installed_files(agent) & installed_files(clusters)
    assert not shared, f"installed by both distributions: {sorted(shared)}"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "oneclick").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= installed_files(agent) | installed_files(clusters)
    assert {m for m in installed_files(agent) if m.endswith(".py")} == {
        m for m in modules if m == "oneclick/__init__.py"
        or m.startswith(("oneclick/api/", "oneclick/agent/"))}
    # The agent's sdist carries its sources themselves (the checkout links to them).
    with tarfile.open(released / f"oneclick_agent-{__version__}.tar.gz") as sdist:
        member = sdist.getmember(f"oneclick_agent-{__version__}/oneclick/agent/main.py")
        assert member.isfile()


def test_the_wheel_installs_one_import_name_and_working_commands(released: Path,
                                                                 tmp_path: Path) -> None:
    # As `pip install oneclick-clusters` from an index that has both: the agent comes along.
    python = fresh_venv(tmp_path, "--find-links", str(released),
                        str(wheel(released, "oneclick_clusters")))
    venv = tmp_path / "venv"
    found = python("import importlib.util as u; "
                   f"print([n for n in {GENERIC!r} if u.find_spec(n)])")
    assert found == "[]", f"generic top-level modules installed: {found}"
    assert python("import oneclick.controller.main, oneclick.agent.main; print('ok')") == "ok"
    assert python("import importlib.metadata as m; print(m.version('oneclick-agent'))"
                  ) == __version__
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
    subprocess.run([str(venv / "bin" / "pip"), "check"], check=True, capture_output=True)

    # No file belongs to both: without the operator, the agent is whole.
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-q", "-y", "oneclick-clusters"],
                   check=True)
    assert not (venv / "bin" / "occ").exists()
    assert python("import oneclick.agent.main, oneclick; print(oneclick.__version__)"
                  ) == __version__
    done = subprocess.run([str(venv / "bin" / "occ-agent"), "--help"], capture_output=True,
                          text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr


@pytest.fixture
def token_key() -> bytes:
    return os.urandom(32)


def test_the_agent_alone_contextualizes_a_member_without_the_operators_libraries(
    released: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes, tmp_path: Path,
) -> None:
    """Whoever bakes an image installs oneclick-agent, from its wheel, and nothing else: that
    agent contextualizes a member through the real broker."""
    python = fresh_venv(tmp_path, str(wheel(released, "oneclick_agent")))
    venv = tmp_path / "venv"
    assert python("import oneclick; print(oneclick.__file__)").startswith(str(venv))
    for library in OPERATOR_ONLY:
        assert python("import importlib.util as u; "
                      f"print(u.find_spec({library!r}) is None)") == "True", library
        refused = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {library}"],
                                 capture_output=True, text=True, cwd=tmp_path, check=False)
        assert f"No module named '{library}'" in refused.stderr, (library, refused.stderr)
    assert python("import importlib.util as u; print([n for n in ('oneclick.controller', "
                  "'oneclick.cli', 'oneclick.kits', 'oneclick.controlplane') if u.find_spec(n)])"
                  ) == "[]"
    assert not (venv / "bin" / "occ").exists() and not (venv / "bin" / "occ-controller").exists()

    root = tmp_path / "root"
    contextualize_alone([str(venv / "bin" / "occ-agent")], controller, kubeconfig, namespace,
                        "slim", token_key, root, "127.31.0.1")
    assert (root / "var" / "lib" / "oneclick" / "context.json").is_file()


def test_the_checkouts_editable_install_is_the_whole_tree() -> None:
    """What hack/bootstrap and CI install (`pip install -e '.[dev]'`): one distribution with
    every module from the working tree and all four commands, needing no oneclick-agent."""
    import oneclick.agent
    import oneclick.controller

    # (as installed in this environment: not an egg-info a build left in the checkout)
    [here] = metadata.distributions(name="oneclick-clusters",
                                    path=[sysconfig.get_paths()["purelib"]])
    assert {e.name for e in here.entry_points if e.group == "console_scripts"} == {
        "occ", "kubectl-occ", "occ-controller", "occ-agent"}
    required = {r.split(">")[0].split("=")[0] for r in here.requires or []
                if "extra ==" not in r}
    assert {"pydantic", "httpx", "cryptography", "kopf"} <= required
    assert "oneclick-agent" not in required
    for package in (oneclick.agent, oneclick.controller):
        assert Path(str(package.__file__)).is_relative_to(ROOT / "oneclick"), package.__file__


def test_the_chart_deploys_the_version_of_the_package() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "oneclick" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
