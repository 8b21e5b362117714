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


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_the_layers_import_only_downwards() -> None:
    assert not _imports("agent") & {"controller", "cli", "kopf", "kubernetes", "kits",
                                    "controlplane", "click", "rich"}
    assert not _imports("api") & {"controller", "cli", "agent", "kopf", "kubernetes"}
    assert "cli" not in _imports("controller")
    assert "controller" not in _imports("cli")
