"""`occ-controller`: run the operator (kopf) with its context broker and metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import kopf

from oneclick.controller import leader, logs, operator  # noqa: F401  (operator registers the handlers)
from oneclick.controller.providers import config as providers_config
from oneclick.controller.settings import Settings
from oneclick.kits.yamlfile import YamlFileError


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="occ-controller",
        description="Reconcile ClusterLaunches: launch members through a provider, serve the "
                    "context broker to their agents, report progress in status. Settings come "
                    "from OCC_* environment variables (see oneclick/controller/settings.py); the "
                    "cluster from $KUBECONFIG or the in-cluster service account.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages (each reconcile pass among them)")
    parser.add_argument("--log-format", choices=["text", "json"],
                        help="text, or one JSON object per line for log collectors (default: "
                             "$OCC_LOG_FORMAT, else text)")
    args = parser.parse_args()
    settings = Settings.from_env()  # read once, here; the handlers get them in kopf's memo
    providers_file = None
    if settings.providers_file:  # a mistake there stops us here, named by file and line
        try:
            providers_file = providers_config.load(Path(settings.providers_file))
        except YamlFileError as error:
            parser.exit(2, f"occ-controller: {error}\n")
    logs.setup(args.log_format or settings.log_format, args.verbose)
    # With several replicas, one leads: the others bind nothing (no broker) until they do.
    leadership = leader.Leadership.of(settings) if settings.leader_election else None
    if leadership is not None:
        leadership.wait()
    liveness = (f"http://0.0.0.0:{settings.health_port}/healthz"
                if settings.health_port else None)
    kopf.run(
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=liveness,
        # kopf's peering pauses operators by priority but elects nobody: leader.py elects.
        standalone=True,
        memo=kopf.Memo(settings=settings, providers_file=providers_file),
    )
    if leadership is not None:  # a graceful stop: the standby takes over at once
        leadership.release()
