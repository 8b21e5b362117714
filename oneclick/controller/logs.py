"""The controller's log: one format for its own loggers and kopf's, plain text or one JSON
object per line (for log collectors), with waiting said at info.

kopf formats its per-object messages itself (kopf.configure: the object's namespace/name as a
prefix in text, an `object` field in JSON); our loggers go through the same handler, so every
line has the same shape.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import kopf

LogFormat = Literal["text", "json"]

# kopf says at error that a handler "failed temporarily" when it asks to be called again: ours
# do so while they wait (a deleted launch for its members' instances), which is progress.
WAITING = re.compile(r"Handler '[^']+' failed temporarily: waiting for .*", re.DOTALL)
CHATTY = ("httpx", "httpcore")  # a line per request at info (the API server's watches)


class WaitingIsNotAnError(logging.Filter):
    """A handler that asks to be called again while it waits says so at info, not error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name.startswith("kopf") and record.levelno == logging.ERROR
                and WAITING.fullmatch(record.getMessage())):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class LoggerField(logging.Filter):
    """JSON lines name their logger (kopf's JSON formatter leaves it out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.logger = record.name
        return True


def setup(log_format: LogFormat, verbose: bool) -> None:
    kopf.configure(verbose=verbose,
                   log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
                   log_prefix=log_format != "json")
    for handler in logging.getLogger().handlers:
        handler.addFilter(WaitingIsNotAnError())
        if log_format == "json":
            handler.addFilter(LoggerField())
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)  # Python's warnings in the same format, not raw on stderr
