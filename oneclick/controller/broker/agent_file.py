"""The agent as one file (`oneclick-agent.pyz`, `occ dev build --agent`), served to members by
the broker: an image with nothing of ours fetches it over the broker's TLS with its
bootstrap's token and CA, checks its digest and runs it with its own python3."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

NOT_SERVED = ("this broker serves no agent: the controller's OCC_AGENT_BUNDLE names no file "
              "(`occ dev build --agent` makes one)")


@dataclass(frozen=True)
class Served:
    body: bytes
    sha256: bytes

    @property
    def content_digest(self) -> str:
        """The Content-Digest header's value (RFC 9530)."""
        return f"sha-256=:{base64.b64encode(self.sha256).decode()}:"


class AgentFile:
    """The file named by OCC_AGENT_BUNDLE as it is when asked for (read again only when its
    size or modification time changed; kept in memory meanwhile, about 8 MiB)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._read: tuple[int, int, Served] | None = None

    def current(self) -> Served:
        """The file and its SHA-256; LookupError saying why when there is none to serve."""
        if self.path is None:
            raise LookupError(NOT_SERVED)
        try:
            info = os.stat(self.path)
            if self._read is None or self._read[:2] != (info.st_mtime_ns, info.st_size):
                body = self.path.read_bytes()
                self._read = (info.st_mtime_ns, info.st_size,
                              Served(body, hashlib.sha256(body).digest()))
        except OSError as error:
            raise LookupError(f"this broker's agent file {self.path} cannot be read "
                              f"({error.strerror})") from error
        return self._read[2]
