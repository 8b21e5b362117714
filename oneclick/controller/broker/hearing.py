"""When the broker last heard from each member: kept in memory, so hearing costs no API write.

Every authenticated request counts, and a member held in a long poll is being heard for as long
as it waits. The broker writes `status.lastSeenAt` only with the writes it makes anyway
(identity, report); the launch's status reads both, so members that went silent show.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections import Counter
from collections.abc import Iterator

FORGET_AFTER = 24 * 3600.0  # a member silent this long is gone, or its launch has failed


class Hearing:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}  # member uid -> time.time() of its last request
        self._waiting: Counter[str] = Counter()  # member uid -> requests held open now
        self._pruned = time.time()

    def heard(self, uid: str) -> None:
        now = time.time()
        self._last[uid] = now
        if now - self._pruned > 3600:  # deleted members must not accumulate
            self._pruned = now
            self._last = {u: t for u, t in self._last.items() if now - t < FORGET_AFTER}

    @contextlib.contextmanager
    def waiting(self, uid: str) -> Iterator[None]:
        """A request held open (a long poll): the member is heard all along."""
        self._waiting[uid] += 1
        try:
            yield
        finally:
            self._waiting[uid] -= 1
            if self._waiting[uid] <= 0:
                del self._waiting[uid]
            self.heard(uid)

    def last(self, uid: str) -> datetime.datetime | None:
        """When the member was last heard from by this process; now while it waits."""
        if self._waiting.get(uid):
            return datetime.datetime.now(datetime.UTC)
        seen = self._last.get(uid)
        return None if seen is None else datetime.datetime.fromtimestamp(seen, datetime.UTC)
