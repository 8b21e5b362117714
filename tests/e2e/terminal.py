"""A program run on a real pseudo-terminal, as a user runs it, and the screen it leaves: what
was written is replayed (cursor moves, erased lines) so a test reads what the user saw."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

_CONTROL = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+|\x1b")


@dataclass
class Session:
    returncode: int
    raw: str  # everything written to the terminal, escape sequences and all

    def screen(self) -> list[str]:
        """The lines on the screen at the end (its whole history: nothing scrolls away)."""
        lines: list[str] = [""]
        row = col = 0
        for match in _CONTROL.finditer(self.raw):
            text = match.group()
            if text == "\r":
                col = 0
            elif text == "\n":
                row += 1
                if row == len(lines):
                    lines.append("")
            elif match.group(2) is not None:
                arguments, command = match.group(1), match.group(2)
                count = int(arguments) if arguments.isdigit() else 1
                if command == "A":
                    row = max(0, row - count)
                elif command == "B":
                    row = min(len(lines) - 1, row + count)
                elif command == "K":  # erase: 2 the whole line, else from the cursor on
                    lines[row] = "" if arguments == "2" else lines[row][:col]
            elif not text.startswith("\x1b"):
                line = lines[row].ljust(col)
                lines[row] = line[:col] + text + line[col + len(text):]
                col += len(text)
        return [line.rstrip() for line in lines]


def run(argv: list[str], env: dict[str, str], *, timeout: float = 300.0, columns: int = 120,
        rows: int = 40, watch: Callable[[str], None] | None = None) -> Session:
    """Run `argv` with a terminal for stdin, stdout and stderr; `watch` sees the output so
    far after each read."""
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child,
                               env={**env, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, "timed out:\n" + b"".join(chunks).decode()
            ready, _, _ = select.select([main], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every end of the terminal is closed (the program exited)
                break
            if not data:
                break
            chunks.append(data)
            if watch is not None:
                watch(b"".join(chunks).decode(errors="replace"))
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return Session(returncode, b"".join(chunks).decode(errors="replace"))
