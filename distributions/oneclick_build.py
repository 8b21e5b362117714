"""The build backend of oneclick-clusters (pyproject.toml at the root): setuptools, told
whether it builds a release or a checkout's editable install (setup.py reads `EDITABLE`).

- A release (`python -m build`, `pip wheel .`, `pip install .`) is oneclick-clusters without
  what oneclick-agent ships (oneclick/__init__.py, oneclick.api, oneclick.agent and the
  occ-agent command): it requires `oneclick-agent==<its own version>` instead, so the two
  installed together share no file.
- An editable install (`pip install -e '.[dev]'`: hack/bootstrap, CI) is the whole checkout as
  one distribution: every module of `oneclick` from the working tree, all four commands, both
  distributions' dependencies. (oneclick-agent is built from this checkout, not published
  where pip would find it while resolving the editable install, and an installed copy of the
  agent next to the working tree would go stale with every edit.)

Every other hook is setuptools' own.
"""

from __future__ import annotations

from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the PEP 517 hooks, unchanged)

EDITABLE = False


def _editable() -> None:
    global EDITABLE  # (each hook runs in a process of its own)
    EDITABLE = True


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    _editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: dict[str, Any] | None = None) -> str:
    _editable()
    return str(_setuptools.prepare_metadata_for_build_editable(metadata_directory,
                                                               config_settings))


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    _editable()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
