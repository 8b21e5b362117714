"""The agent as one file (`oneclick-agent.pyz`, `occ dev build --agent`), served to members by
the broker: an image with nothing of ours fetches it over the broker's TLS with its
bootstrap's token and CA, checks its digest and runs it with its own python3.

The file (about 8 MiB) is kept once and sent in CHUNKs, each of which must leave within STALL
seconds, to at most DOWNLOADS members at once and once at a time to each: a member that asks
and never reads holds one slot for STALL seconds and a few chunks of memory, not the whole
file encrypted into its connection's buffers for ever."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CHUNK = 64 * 1024
STALL = 30.0  # seconds one chunk may take to leave: a reader that stops is cut off
DOWNLOADS = 32  # at once, in all

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


@dataclass
class Downloads:
    """Who is being sent the file now: at most `limit` members, each once at a time."""

    limit: int = DOWNLOADS
    members: set[str] = field(default_factory=set)

    def start(self, member: str) -> bool:
        """Take a slot for `member` (its uid); False when it has one or none is free."""
        if member in self.members or len(self.members) >= self.limit:
            return False
        self.members.add(member)
        return True

    def end(self, member: str) -> None:
        self.members.discard(member)


async def send_file(request: web.Request, served: Served) -> web.StreamResponse:
    """The file as the answer to `request`, chunk by chunk; a reader that stops taking it for
    STALL seconds loses its connection."""
    response = web.StreamResponse(headers={"Content-Type": "application/zip",
                                           "Content-Digest": served.content_digest})
    response.content_length = len(served.body)
    await response.prepare(request)
    view = memoryview(served.body)
    try:
        for start in range(0, len(view), CHUNK):
            async with asyncio.timeout(STALL):
                await response.write(view[start:start + CHUNK])
        await response.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # (what it holds goes with it; it may ask again)
    return response
