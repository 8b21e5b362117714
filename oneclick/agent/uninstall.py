"""`occ-agent --uninstall`: take back everything the agent installed, so a host that is not
reimaged goes to its next user as it was before (the ssh provider runs it on terminate).

What the common tasks (oneclick/agent/tasks.py) install, and how each goes:
- the managed blocks (between BEGIN and END) of /etc/hosts, ssh_known_hosts, the equiv files,
  /root/.shosts and /root/.ssh/authorized_keys: removed, the rest of each file kept;
- the sshd and ssh drop-ins: removed;
- the Include lines put at the top of sshd_config and ssh_config: removed only when the record
  made before the first contextualization says they were not there;
- the context, the data, the bootstrap (/var/lib/oneclick) and the agent's log: removed.
Files and directories the record says did not exist are removed once nothing else is in them.
What role scripts made is the image's business: an image that needs it undone (daemons it
started, mounts, a launch's secrets) has executable scripts in /etc/oneclick/uninstall.d/, run
first, in name order, with the role scripts' environment; one that fails stops the uninstall.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, ValidationError

from oneclick.agent.files import STATE_DIR, environment, write_atomically
from oneclick.agent.tasks import BEGIN, END

# Relative to the root; what tasks.py writes.
MANAGED = ("etc/hosts", "etc/ssh/ssh_known_hosts", "etc/ssh/shosts.equiv", "etc/hosts.equiv",
           "root/.shosts", "root/.ssh/authorized_keys")
DROP_INS = ("etc/ssh/sshd_config.d/50-oneclick.conf", "etc/ssh/ssh_config.d/50-oneclick.conf")
INCLUDES = {"etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf",
            "etc/ssh/ssh_config": "Include /etc/ssh/ssh_config.d/*.conf"}
LOG = "var/log/oneclick-agent.log"
# Directories the tasks may create (deepest first, so they go in that order).
DIRECTORIES = ("etc/ssh/sshd_config.d", "etc/ssh/ssh_config.d", "root/.ssh")
RECORD = STATE_DIR / "installed.json"
INCLUDE_LINES = 5  # tasks.py looks for its Include among the first lines only
HOOKS = Path("etc/oneclick/uninstall.d")  # the image's own undo
HOOK_TIMEOUT = 120.0


class Record(BaseModel):
    """What the host had before the agent's first run."""

    absent: list[str] = []  # paths that did not exist
    modes: dict[str, int] = {}  # the modes of the files the tasks rewrite
    includes: dict[str, bool] = {}  # whether each config had its Include line at the top


def record(root: Path) -> None:
    """Note what is there before the agent changes anything; the first record stands (a rerun
    of the agent finds its own changes, not the host's)."""
    path = root / RECORD
    if path.exists():
        return
    watched = [*MANAGED, *INCLUDES, *DIRECTORIES]
    state = Record(
        absent=[p for p in watched if not (root / p).exists()],
        modes={p: (root / p).stat().st_mode & 0o7777 for p in [*MANAGED, *INCLUDES]
               if (root / p).is_file()},
        includes={p: line in _top(root / p) for p, line in INCLUDES.items()},
    )
    with contextlib.suppress(OSError):  # contextualization meets the same trouble, reports it
        write_atomically(path, state.model_dump_json(indent=1) + "\n", mode=0o600)


def uninstall(root: Path) -> list[str]:
    """Undo the image's role scripts (its hooks) and the common tasks, and remove the state;
    returns what was done, one line each."""
    state = _read_record(root)
    done = run_hooks(root)
    for relative in MANAGED:
        if _remove_block(root / relative):
            done.append(f"removed the managed block of /{relative}")
    for relative in DROP_INS:
        if (root / relative).exists():
            (root / relative).unlink()
            done.append(f"removed /{relative}")
    for relative, line in INCLUDES.items():
        if not state.includes.get(relative, True) and _remove_include(
                root / relative, line):
            done.append(f"removed {line!r} from /{relative}")
    for relative, mode in state.modes.items():
        path = root / relative
        if path.is_file() and path.stat().st_mode & 0o7777 != mode:
            os.chmod(path, mode)
    absent = set(state.absent)
    for relative in [*MANAGED, *INCLUDES, *DIRECTORIES]:
        if relative in absent and _remove_if_empty(root / relative):
            done.append(f"removed /{relative} (it was not there before)")
    if (root / LOG).exists():
        (root / LOG).unlink()
        done.append(f"removed /{LOG}")
    if (root / STATE_DIR).exists():
        for entry in (root / STATE_DIR).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        with contextlib.suppress(OSError):  # (it may be a mount point: then it stays, empty)
            (root / STATE_DIR).rmdir()
        done.append(f"removed /{STATE_DIR}")
    return done


def run_hooks(root: Path) -> list[str]:
    """Each executable uninstall.d script, in name order; OSError names the one that failed."""
    hooks = root / HOOKS
    scripts = sorted(p for p in hooks.iterdir() if p.is_file() and os.access(p, os.X_OK)) if (
        hooks.is_dir()) else []
    env = {**os.environ, "OCC_ROOT": str(root)}
    with contextlib.suppress(OSError):  # (never contextualized: no context to read)
        env.update(environment(root))
    done = []
    for script in scripts:
        try:
            ran = subprocess.run([str(script)], env=env, cwd=root, capture_output=True,
                                 text=True, timeout=HOOK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as error:
            raise OSError(f"/{script.relative_to(root)} ran longer than "
                          f"{HOOK_TIMEOUT:.0f}s") from error
        output = (ran.stdout + ran.stderr).strip()
        if ran.returncode != 0:
            raise OSError(f"/{script.relative_to(root)} exited with code {ran.returncode}: "
                          + " | ".join(output.splitlines()[-3:]))
        done.append(f"ran /{script.relative_to(root)}" + (f": {output.splitlines()[-1]}"
                                                         if output else ""))
    return done


def _read_record(root: Path) -> Record:
    """The record, or nothing known (then Include lines stay: they may be the host's own)."""
    try:
        return Record.model_validate_json((root / RECORD).read_bytes())
    except (OSError, ValidationError):
        return Record()


def _top(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()[:INCLUDE_LINES]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove_block(path: Path) -> bool:
    """Every complete managed block of the file goes; the lines around them stay as they are.
    A BEGIN without its END stays too (the provider's check then finds it and says so)."""
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return False
    kept: list[str] = []
    found = False
    while lines:
        line = lines.pop(0)
        if line == BEGIN and END in lines:
            del lines[:lines.index(END) + 1]
            found = True
        else:
            kept.append(line)
    if found:
        _rewrite(path, kept)
    return found


def _remove_include(path: Path, include: str) -> bool:
    lines = _top(path)
    if include not in lines:
        return False
    everything = path.read_text().splitlines()
    del everything[lines.index(include)]
    _rewrite(path, everything)
    return True


def _rewrite(path: Path, lines: list[str]) -> None:
    mode = path.stat().st_mode & 0o7777
    write_atomically(path, "".join(f"{line}\n" for line in lines), mode)


def _remove_if_empty(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()):
            return False
        path.rmdir()
        return True
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()
        return True
    return False
