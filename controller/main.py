"""`occ-controller`: run the operator (kopf) with its context broker and metrics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import kopf

from controller import operator  # noqa: F401  (registers the handlers)
from controller.providers import config as providers_config
from controller.settings import Settings
from kits.yamlfile import YamlFileError


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="occ-controller",
        description="Reconcile ClusterLaunches: launch members through a provider, serve the "
                    "context broker to their agents, report progress in status. Settings come "
                    "from OCC_* environment variables (see controller/settings.py); the cluster "
                    "from $KUBECONFIG or the in-cluster service account.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args()
    settings = Settings.from_env()
    if settings.providers_file:  # a mistake there stops us here, named by file and line
        try:
            providers_config.load(Path(settings.providers_file))
        except YamlFileError as error:
            parser.exit(2, f"occ-controller: {error}\n")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    liveness = (f"http://0.0.0.0:{settings.health_port}/healthz"
                if settings.health_port else None)
    kopf.run(
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=liveness,
        standalone=True,  # one controller per cluster; no peering objects needed
    )
