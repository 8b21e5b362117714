"""The kopf operator: startup and cleanup of what every handler shares (API client, broker)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from controller.broker.runtime import start_broker
from controller.kube import KubeClient
from controller.settings import Settings

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    config = Settings.from_env()
    settings.persistence.finalizer = "clusters.oneclick.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="clusters.oneclick.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="clusters.oneclick.dev")
    settings.posting.level = logging.INFO
    kube = KubeClient()
    broker = await start_broker(kube, config)
    if config.metrics_port:
        start_http_server(config.metrics_port)
    memo.config, memo.kube, memo.broker = config, kube, broker
    logger.info("context broker listening, reachable by members at %s", broker.url)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "broker" in memo:
        await memo.broker.stop()
    if "kube" in memo:
        await memo.kube.aclose()
