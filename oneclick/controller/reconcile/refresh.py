"""A broker that moved for good: members launched before the move are handed a new bootstrap.

Each member's status says which broker URL its bootstrap carries (`brokerUrl`). When the URL
the controller would give it now differs and the member has not reported yet, its provider
replaces the bootstrap on the instance (same token, same member); the agent reads it again
after failed connections and follows. A provider that cannot (EC2: user data is fixed once an
instance runs) is named once in the log: there the broker needs a stable name.
"""

from __future__ import annotations

import logging
import time

from oneclick.api.member import MemberPhase
from oneclick.controller import metrics
from oneclick.controller.cache import MemberRecord
from oneclick.controller.providers import ProviderError, userdata
from oneclick.controller.providers.base import RefreshesBootstrap
from oneclick.controller.reconcile.members import write_status
from oneclick.controller.runtime import Runtime

logger = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds before a failed refresh is tried again
IN_FLIGHT = float("inf")


def refresh_moved(rt: Runtime, members: list[MemberRecord]) -> None:
    """Start a refresh for each member whose bootstrap names a broker URL other than the
    current one (at most one at a time per member; a failure waits RETRY_AFTER)."""
    now = time.monotonic()
    urls: dict[str, str] = {}
    for member in members:
        if (member.report is not None or member.deleting
                or not member.status.get("instanceId")
                or member.status.get("phase") in (MemberPhase.FAILED, MemberPhase.TERMINATED)):
            continue
        provider_name = member.spec.provider
        provider = rt.providers.get(provider_name)
        if provider is None:
            continue
        if provider_name not in urls:
            urls[provider_name] = rt.broker_url(provider)
        url = urls[provider_name]
        if member.status.get("brokerUrl") == url:
            continue
        if not isinstance(provider, RefreshesBootstrap):
            if provider_name not in rt.cannot_refresh:
                rt.cannot_refresh.add(provider_name)
                logger.warning(
                    "the broker is now at %s, but provider %s cannot hand running instances a "
                    "new bootstrap: their members keep trying %s until their launch times "
                    "out (give the broker a stable address: OCC_BROKER_URL)", url,
                    provider_name, member.status.get("brokerUrl") or "the old address")
            continue
        last = rt.refreshing.get(member.uid)
        if last is not None and now - last < RETRY_AFTER:
            continue
        rt.refreshing[member.uid] = IN_FLIGHT
        rt.spawn(_refresh(rt, member, provider, provider_name, url))


async def _refresh(rt: Runtime, member: MemberRecord, provider: RefreshesBootstrap,
                   provider_name: str, url: str) -> None:
    instance_id = member.status["instanceId"]
    try:
        bootstrap = rt.bootstrap(member, rt.provider(provider_name))
        await provider.refresh_bootstrap(instance_id, userdata.render(bootstrap))
    except ProviderError as error:
        metrics.PROVIDER_CALLS.labels(provider_name, "refresh_bootstrap", "error").inc()
        logger.warning("handing %s/%s its new bootstrap failed%s: %s", member.namespace,
                       member.name, "" if error.permanent else
                       f" (will try again in {RETRY_AFTER:.0f} s)", error)
        # (a permanent refusal is not asked again by this process)
        rt.refreshing[member.uid] = IN_FLIGHT if error.permanent else time.monotonic()
        return
    except Exception:
        logger.exception("handing %s/%s its new bootstrap", member.namespace, member.name)
        rt.refreshing[member.uid] = time.monotonic()
        return
    metrics.PROVIDER_CALLS.labels(provider_name, "refresh_bootstrap", "ok").inc()
    logger.info("%s/%s: its bootstrap now names the broker at %s (was %s; instance %s)",
                member.namespace, member.name, url,
                member.status.get("brokerUrl") or "unrecorded", instance_id)
    fresh = rt.cache.members.get((member.namespace, member.name))
    try:
        if fresh is not None and not fresh.deleting:
            await write_status(rt, fresh, brokerUrl=url)
    except Exception as error:  # handed over all the same; the next pass writes it down
        logger.warning("recording %s/%s's broker URL: %s", member.namespace, member.name, error)
    finally:
        rt.refreshing.pop(member.uid, None)
