"""The agent's log: to stderr, to a file under the member's root, and a bounded tail for the
report (the broker keeps only the last LOG_TAIL_LIMIT characters)."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

from oneclick.api.protocol import LOG_TAIL_LIMIT

logger = logging.getLogger("occ-agent")


class TailHandler(logging.Handler):
    """Keeps the most recent records, at most `limit` characters of them."""

    def __init__(self, limit: int = LOG_TAIL_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self._lines: collections.deque[str] = collections.deque()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.add(self.format(record))

    def add(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._lines.append(line)
            self._size += len(line) + 1
        while self._size > self.limit and self._lines:
            self._size -= len(self._lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self._lines)[-self.limit:]


def setup(root: Path, verbose: bool) -> TailHandler:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    tail = TailHandler()
    handlers: list[logging.Handler] = [logging.StreamHandler(), tail]
    log_file = root / "var" / "log" / "oneclick-agent.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    except OSError:
        pass  # a read-only /var/log must not stop contextualization
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return tail
