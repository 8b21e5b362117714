"""Prometheus metrics of the controller and its broker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLUSTERS = Gauge("occ_clusters", "ClusterLaunches by phase", ["phase"])
MEMBERS = Gauge("occ_members", "LaunchMembers by state", ["state"])
LAUNCH_SECONDS = Histogram(
    "occ_launch_duration_seconds", "From creation until every member runs",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600))
CONTEXTUALIZATION_SECONDS = Histogram(
    "occ_contextualization_duration_seconds", "From every member running until Ready",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
RECONCILE_PASSES = Counter(
    "occ_reconcile_passes_total", "Reconcile passes of launches, by the launch's phase",
    ["phase"])
BROKER_REQUESTS = Counter(
    "occ_broker_requests_total", "Context broker requests by endpoint and status code",
    ["endpoint", "code"])
PROVIDER_CALLS = Counter(
    "occ_provider_calls_total", "Provider calls by provider, operation and outcome",
    ["provider", "operation", "outcome"])
BROKER_CONNECTIONS = Gauge(
    "occ_broker_connections", "Connections to the context broker open now (from accept)")
BROKER_CONNECTIONS_REFUSED = Counter(
    "occ_broker_connections_refused_total",
    "Broker connections closed at accept: over the cap in all (total) or from one source "
    "address (per_source)", ["reason"])
BROKER_CONNECTIONS_CUT = Counter(
    "occ_broker_connections_cut_total",
    "Broker connections closed because a request's head came too slowly (header_timeout) or "
    "was too large (header_size)", ["reason"])
