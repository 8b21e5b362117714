"""The agent as one file that needs only a Python interpreter: `oneclick-agent.pyz`.

The zip carries the agent and the wire protocol (`oneclick.agent`, `oneclick.api`) and their
three libraries (pydantic, httpx, cryptography, with what they need), nothing of the
controller: an image or a host gets the agent without the operator. Run as `python3
oneclick-agent.pyz [occ-agent's options]`: its `__main__` unpacks the libraries once per
bundle (compiled modules cannot be imported from a zip) into a cache directory named by the
bundle's digest, then runs `occ-agent` from there. An unpacked copy is trusted only where no
other user could have put it: it, the cache directory and that one's parent are this user's
(or root's) and writable by no one else (a sticky parent, as /tmp, aside); root never
unpacks into a shared directory such as /tmp.

The compiled libraries are those of the interpreter that builds it (CPython 3.11 on x86_64
Linux here); the bundle says so and refuses another interpreter with a clear message.

    python -m oneclick.controlplane.agent_bundle     # build (cached), print its path
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from oneclick import __version__
from oneclick.controlplane.binaries import cache_root, file_lock

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "oneclick"
CONSTRAINTS = REPO / "hack" / "constraints.txt"
LIBRARIES = ("pydantic", "httpx", "cryptography")  # what the agent installs with
CARRIED = ("__init__.py", "api", "agent")  # of oneclick/
UNUSED_FOR = 7 * 24 * 3600.0  # seconds a bundle of other sources is kept after its last use

MAIN = '''"""oneclick-agent: unpack once (per bundle digest), then run occ-agent."""
import os, shutil, stat, sys, tempfile, zipfile
from pathlib import Path

BUNDLE, DIGEST, PYTHON = {bundle!r}, {digest!r}, {python!r}
here = "%d.%d" % sys.version_info[:2]
if here != PYTHON:
    sys.exit("%s carries libraries for CPython %s; this is %s %s: run it with python%s"
             % (BUNDLE, PYTHON, sys.implementation.name, here, PYTHON))
ME = os.geteuid()


def private(path, follow=True, shared=False):
    """A directory of this user's (or root's) that no one else can write to; `shared`: or
    a sticky one (/tmp), whose entries no one else can move."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (ME, 0):
        return False
    return not info.st_mode & 0o022 or (shared and bool(info.st_mode & stat.S_ISVTX))


def unpacked(base):
    """The libraries unpacked before, trusted only where no one else could have put them:
    the directory, its cache and the cache's parent are this user's, and none is writable by
    others (a sticky parent, /tmp, may be; a sticky cache only when this is not root)."""
    target = Path(base) / ("agent-" + DIGEST)
    if (private(os.path.dirname(os.path.abspath(base)), shared=True)
            and private(base, shared=ME != 0) and private(target, follow=False)
            and (target / ".complete").is_file()):
        return target
    return None


bases = [os.environ.get("OCC_AGENT_CACHE"), "/var/cache/oneclick",
         str(Path.home() / ".cache" / "oneclick"), tempfile.gettempdir()]
target = None
for base in filter(None, bases):
    target = unpacked(base)
    if target is not None:
        break
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError:
        continue
    if not private(base, shared=ME != 0):
        continue  # (root never unpacks where another user can write: /tmp)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".agent-", dir=base))
    except OSError:
        continue
    try:
        with zipfile.ZipFile(sys.argv[0]) as archive:
            archive.extractall(staging, [n for n in archive.namelist() if n.startswith("lib/")])
        (staging / ".complete").touch()
        staging.rename(Path(base) / ("agent-" + DIGEST))
    except OSError:  # another run unpacked it first (or the disk is full)
        shutil.rmtree(staging, ignore_errors=True)
    target = unpacked(base)
    if target is not None:
        break
if target is None:
    sys.exit("%s: no directory to unpack its libraries into that only this user can write "
             "(tried %s): name one in OCC_AGENT_CACHE" % (BUNDLE, ", ".join(filter(None, bases))))
sys.path.insert(0, str(target / "lib"))
from oneclick.agent.main import main  # noqa: E402
sys.argv[0] = "occ-agent"
main()
'''


class BundleError(Exception):
    pass


def python_tag() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _sources() -> list[Path]:
    files: list[Path] = []
    for name in CARRIED:
        path = PACKAGE / name
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        files.extend(p for p in found if "__pycache__" not in p.parts)
    return files


def _inputs_digest() -> str:
    """What the bundle is made of: our sources, the pinned libraries, the interpreter, its
    __main__."""
    h = hashlib.sha256(f"{python_tag()} {platform.machine()} {__version__}".encode())
    h.update(MAIN.encode())
    h.update(CONSTRAINTS.read_bytes())
    for path in _sources():
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def bundle_path() -> Path:
    return cache_root() / "agent" / f"oneclick-agent-{__version__}-{_inputs_digest()}.pyz"


def build(log: bool = True) -> Path:
    """The bundle for these sources (built once, then found in the cache). One build at a
    time (test workers, `occ dev up` and CI on one machine); bundles of other sources are
    left alone until unused for UNUSED_FOR (another checkout may build from them again)."""
    target = bundle_path()
    if not target.exists():
        with file_lock(target.parent):
            if not target.exists():
                _build(target, log)
    with contextlib.suppress(OSError):  # (a cache this user may read but not write)
        os.utime(target)  # used now: _prune keeps it
    _prune(target.parent, keep=target)
    return target


def _prune(directory: Path, keep: Path) -> None:
    stale = time.time() - UNUSED_FOR
    for old in directory.glob("oneclick-agent-*.pyz"):
        with contextlib.suppress(OSError):
            if old != keep and old.stat().st_mtime < stale:
                old.unlink()


def _build(target: Path, log: bool) -> None:
    if log:
        print(f"building {target.name} (cached afterwards) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        lib = Path(work) / "lib"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-compile", "--only-binary=:all:", "--target", str(lib),
             "-c", str(CONSTRAINTS), *LIBRARIES], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BundleError(f"pip could not fetch {', '.join(LIBRARIES)}: "
                              f"{done.stderr.strip()[-2000:]}")
        for path in _sources():
            destination = lib / path.relative_to(REPO)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
        for leftover in [*lib.glob("bin"), *lib.rglob("__pycache__")]:
            shutil.rmtree(leftover, ignore_errors=True)
        payload = sorted(p for p in lib.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for path in payload:
            digest.update(path.relative_to(work).as_posix().encode() + b"\0" + path.read_bytes())
        buffer = io.BytesIO(b"#!/usr/bin/env python3\n")  # (as zipapp: then the zip)
        buffer.seek(0, io.SEEK_END)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("__main__.py", MAIN.format(
                bundle=target.name, digest=digest.hexdigest()[:16], python=python_tag()))
            for path in payload:
                archive.write(path, path.relative_to(work).as_posix())
        staged = target.with_suffix(".tmp")
        staged.write_bytes(buffer.getvalue())
        staged.chmod(0o755)
        staged.replace(target)


def main() -> None:
    try:
        print(build())
    except BundleError as error:
        sys.exit(f"agent bundle: {error}")


if __name__ == "__main__":
    main()
