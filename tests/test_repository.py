"""The promises of the repository itself: the README's two commands, CI running the second."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_opens_with_the_main_job_and_the_tests() -> None:
    main_job, tests = readme_commands()
    assert main_job == "hack/demo" and (ROOT / "hack" / "demo").stat().st_mode & 0o111
    assert tests == "hack/bootstrap && .venv/bin/python -m pytest"


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    _, tests = readme_commands()
    bootstrap, run = tests.split(" && ")
    assert f"\n{bootstrap}\n" in script and f"\nexec {run}\n" in script


def _layer(module: str) -> str:
    """`oneclick.controller.x` -> `controller` (our layers); `kopf.y` -> `kopf`."""
    parts = module.split(".")
    return parts[1] if parts[0] == "oneclick" and len(parts) > 1 else parts[0]


def _modules(folder: Path) -> set[str]:
    """Every module the Python files under `folder` import, as written (`from oneclick import
    controlplane` as `oneclick.controlplane`)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                if node.module == "oneclick":
                    found.update(f"oneclick.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def _imports(package: str) -> set[str]:
    """The layers and libraries a package of ours imports."""
    return {_layer(m) for m in _modules(ROOT / "oneclick" / package)}


def test_the_layers_import_only_downwards() -> None:
    assert not _imports("agent") & {"controller", "cli", "kopf", "kubernetes", "kits",
                                    "controlplane", "click", "rich"}
    assert not _imports("api") & {"controller", "cli", "agent", "kopf", "kubernetes"}
    assert "cli" not in _imports("controller")
    assert "controller" not in _imports("cli")
    # occ's entry point imports its commands, never the other way round.
    for path in (ROOT / "oneclick" / "cli").glob("*.py"):
        assert "oneclick.cli.main" not in path.read_text() or path.name == "main.py", path


def test_every_module_of_ours_lives_under_one_import_name() -> None:
    generic = {"api", "agent", "controller", "cli", "controlplane", "kits"}
    assert not generic & {p.name for p in ROOT.iterdir()}, "a package outside oneclick/"
    written = set().union(*(_modules(ROOT / f) for f in ("oneclick", "tests", "bench")))
    assert not {m.split(".")[0] for m in written} & generic
