"""oneclick-agent is built from a build directory of its own: a shared build/ keeps what
earlier builds put there (modules since removed would come back into the wheel) and is
shared by whoever builds in the same tree at the same time. Everything else: pyproject.toml."""

import atexit
import shutil
import tempfile

from setuptools import setup

build_base = tempfile.mkdtemp(prefix="oneclick-agent-build-")
atexit.register(shutil.rmtree, build_base, ignore_errors=True)
setup(options={"build": {"build_base": build_base}})
