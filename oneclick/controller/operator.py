"""The kopf operator: its handlers, and the startup and cleanup of what they share."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from oneclick.api import FINALIZER, GROUP, PAUSED, VERSION
from oneclick.controller.reconcile import launches
from oneclick.controller.reconcile.members import release_deleted_members
from oneclick.controller.runtime import Runtime
from oneclick.controller.secrets import OwnerUnreadable
from oneclick.controller.settings import Settings

logger = logging.getLogger(__name__)
NOT_PAUSED = {PAUSED: kopf.ABSENT}


@kopf.on.startup()
async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    config: Settings = memo.settings  # (read once by occ-controller, with the providers file)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    try:
        runtime = await Runtime.start(config, memo.providers_file)
    except OwnerUnreadable as error:  # a setting no retry mends: stop, saying why
        raise kopf.PermanentError(str(error)) from error
    if config.metrics_port:
        start_http_server(config.metrics_port)
    memo.runtime = runtime
    # Members are not kopf's: thousands of them, each written several times, would cost a
    # kopf event each. Their finalizer is ours (set when they are made), released here.
    runtime.spawn(release_deleted_members(runtime))
    for provider in runtime.providers.values():
        for limitation in provider.limitations():
            logger.warning("provider %s cannot offer here: %s", provider.name, limitation)
    # (before the broker's line, which `occ dev up` waits for)
    served = runtime.broker.agent_sha256()
    if served is not None:
        logger.info("serving the agent file %s (sha256 %s) at /v1/agent to members whose "
                    "image has no agent", config.agent_bundle, served)
    else:
        logger.warning("serving no agent file (%s): members whose image has no agent cannot "
                       "start", f"{config.agent_bundle} cannot be read" if config.agent_bundle
                       else "OCC_AGENT_BUNDLE names none")
    logger.info("context broker listening on port %d; members reach it at %s",
                runtime.broker.port, ", ".join(sorted({
                    runtime.broker_url(p) for p in runtime.providers.values()})))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await memo.runtime.stop()


# One daemon per launch (not a timer): it passes when something changes or a deadline comes
# (`reconcile.requeue`). Stopped on deletion or pause, it is cancelled between passes' awaits.
@kopf.daemon(GROUP, VERSION, "clusterlaunches", annotations=NOT_PAUSED,
             cancellation_timeout=10.0)
async def reconcile_launch(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped,
                           **_: Any) -> None:
    await launches.run(memo.runtime, body, stopped)


@kopf.on.delete(GROUP, VERSION, "clusterlaunches", annotations=NOT_PAUSED)
async def launch_deleted(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    await launches.finalize(memo.runtime, body, **kwargs)
