"""The controller's image as `occ dev build --image` makes it from the Dockerfile: it carries
the agent as one file and names it (OCC_AGENT_BUNDLE), so the chart's controller serves it at
/v1/agent with nothing to set. Read from the image's own archive, layer by layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from oneclick.controlplane import agent_bundle, image

SERVED = "/opt/occ/share/oneclick/oneclick-agent.pyz"


def _config_and_file(archive: Path, wanted: str) -> tuple[dict[str, Any], tarfile.TarInfo,
                                                          bytes]:
    """The image's configuration, and `wanted` as its last layer holding it leaves it."""
    found: tuple[tarfile.TarInfo, bytes] | None = None
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        [entry] = manifest
        config: dict[str, Any] = json.load(outer.extractfile(entry["Config"]))  # type: ignore[arg-type]
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                for member in inner.getmembers():
                    if member.name.lstrip("./") == wanted.lstrip("/") and member.isfile():
                        content = inner.extractfile(member)
                        assert content is not None
                        found = (member, content.read())
    assert found is not None, f"{wanted} is in no layer of {archive}"
    return config, *found


def test_the_image_carries_the_agent_file_and_names_it(tmp_path: Path) -> None:
    built = image.controller_image()
    config, member, body = _config_and_file(built.archive, SERVED)
    env = dict(line.split("=", 1) for line in config["config"]["Env"])
    assert env["OCC_AGENT_BUNDLE"] == SERVED
    # Root's, readable by the controller's user (uid 10001), and not writable by it.
    assert (member.uid, member.mode & 0o777) == (0, 0o644)

    # Made from these sources and constraints for the image's CPython (3.11, as here): the
    # bundle built here, by its name (the digest of its inputs) and file for file. (Only the
    # libraries' RECORDs differ: they list the console scripts pip wrote for the interpreter
    # that built it, which the bundle drops.)
    local = agent_bundle.build(log=False)
    shipped = tmp_path / "oneclick-agent.pyz"
    shipped.write_bytes(body)
    with zipfile.ZipFile(shipped) as theirs, zipfile.ZipFile(local) as ours:
        assert sorted(theirs.namelist()) == sorted(ours.namelist())
        assert f"BUNDLE, DIGEST, PYTHON = {local.name!r}, ".encode() in theirs.read(
            "__main__.py")
        differ = [name for name in ours.namelist() if name != "__main__.py"
                  and not name.endswith(".dist-info/RECORD")
                  and theirs.read(name) != ours.read(name)]
        assert differ == []

    # And it is an agent that runs with python3 alone.
    ran = subprocess.run([sys.executable, "-I", str(shipped), "--help"], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "OCC_AGENT_CACHE": str(tmp_path / "cache")})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage: occ-agent")
