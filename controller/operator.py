"""The kopf operator: its handlers, and the startup and cleanup of what they share."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from api import GROUP, VERSION
from controller.cache import MemberRecord
from controller.reconcile import launches
from controller.reconcile.members import terminate_members
from controller.runtime import Runtime
from controller.settings import Settings

logger = logging.getLogger(__name__)
PREFIX = "clusters.oneclick.dev"
# A paused launch is left alone by the reconciler (as Cluster API's paused annotation): for
# maintenance, for handing launches between controllers, and for tests that play the
# controller's part themselves. The broker still serves its members.
PAUSED = f"{PREFIX}/paused"
NOT_PAUSED = {PAUSED: kopf.ABSENT}


@kopf.on.startup()
async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    config = Settings.from_env()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    runtime = await Runtime.start(config)
    if config.metrics_port:
        start_http_server(config.metrics_port)
    memo.runtime = runtime
    for provider in runtime.providers.values():
        for limitation in provider.limitations():
            logger.warning("provider %s cannot offer here: %s", provider.name, limitation)
    logger.info("context broker listening on port %d", runtime.broker.port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await memo.runtime.stop()


@kopf.timer(GROUP, VERSION, "clusterlaunches", interval=1.0, sharp=False,
            annotations=NOT_PAUSED)
async def reconcile_launch(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await launches.reconcile(memo.runtime, body)


@kopf.on.delete(GROUP, VERSION, "clusterlaunches", annotations=NOT_PAUSED)
async def launch_deleted(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    await launches.finalize(memo.runtime, body, **kwargs)


@kopf.on.delete(GROUP, VERSION, "launchmembers", annotations=NOT_PAUSED)
async def member_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A member goes only after its instance: scale-down, a deleted launch, or kubectl."""
    await terminate_members(memo.runtime, [MemberRecord.from_object(dict(body))], mark=False)
