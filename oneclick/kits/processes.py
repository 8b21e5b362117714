"""Whether a process runs: a pid that exists and is not a zombie waiting to be reaped."""

from __future__ import annotations


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
