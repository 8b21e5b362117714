"""When a launch's next reconcile pass is due: at once when anything of it changed (the launch or
one of its members, as the watch cache sees it), else at the deadline its last pass named (the
status can change with time alone: a timeout, the lifetime's end), else never.

As controller-runtime's `RequeueAfter`: a Ready launch sleeps until it expires or something
happens to it, an ended one until it is deleted, instead of a pass every second for each.
Passes of one launch are at least `MIN_INTERVAL` apart, so a burst of member reports (a
thousand agents at once) costs one pass, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from oneclick.controller.cache import Key, LaunchCache

MIN_INTERVAL = 1.0  # seconds between two passes of one launch
ACTIVE = 1.0  # a launch on its way (members booting, agents reporting): provider polls, timeouts
RESYNC = 300.0  # the longest a launch that may still change goes without a pass (a safety net)


class Wakeups:
    """One flag per launch, raised by every change the cache sees of the launch or its
    members; a launch's pass loop waits on its flag or its deadline, whichever comes first."""

    def __init__(self, cache: LaunchCache) -> None:
        self._flags: dict[Key, asyncio.Event] = {}
        self._cache = cache
        cache.listeners.append(self._changed)

    def _changed(self, cluster: Key, member: Key | None) -> None:
        flag = self._flags.get(cluster)
        if flag is not None:
            flag.set()
            if member is None and cluster not in self._cache.launches:  # deleted: forgotten
                del self._flags[cluster]

    def watch(self, cluster: Key) -> None:
        """From now on, changes of `cluster` are noted (call before its first pass)."""
        self._flags.setdefault(cluster, asyncio.Event())

    async def wait(self, cluster: Key, after: float | None, since: float) -> None:
        """Until a change of `cluster` noted since the last wait, or `after` seconds (None:
        only a change), and at least MIN_INTERVAL after `since` (the last pass's start, on
        the monotonic clock). Changes while the next pass runs wake the wait after it."""
        flag = self._flags.setdefault(cluster, asyncio.Event())
        if after is None or after > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flag.wait(), after)
        rest = since + MIN_INTERVAL - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        flag.clear()  # (what changed until now, the pass about to run sees)
