"""Text from members made harmless for the user's terminal.

A member's log tail, report message, step names and host names are its own text: an escape
sequence in them could clear the screen, retitle the window, rewrite what was printed before,
or hide text behind bidirectional overrides. Everything occ prints that a member could have
written goes through safe(); files occ writes keep the text as it came.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates (they reorder what the user reads).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """`text` with every control character shown as an escape (\\x1b), tabs and newlines
    kept."""
    return _UNSAFE.sub(_escaped, text)
