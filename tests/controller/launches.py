"""Watching launches and instances from the outside, as a user (or a test) does."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from oneclick.kits.processes import running as _alive
from tests.conftest import kubectl

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def sample(name: str, **spec_changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    document["spec"].update(spec_changes)
    return document


def create(kubeconfig: Path, namespace: str, document: dict[str, Any]) -> str:
    created = json.loads(kubectl(kubeconfig, "create", "-n", namespace, "-o", "json", "-f", "-",
                                 stdin=json.dumps(document)).stdout)
    return str(created["metadata"]["name"])


def get(kubeconfig: Path, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl(kubeconfig, "get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def members(kubeconfig: Path, namespace: str, cluster: str) -> list[dict[str, Any]]:
    listing = json.loads(kubectl(kubeconfig, "get", "lm", "-n", namespace, "-o", "json",
                                 "-l", f"clusters.oneclick.dev/cluster={cluster}").stdout)
    items: list[dict[str, Any]] = listing["items"]
    return sorted(items, key=lambda m: (m["spec"]["role"], m["spec"]["index"]))


def wait_for_phase(kubeconfig: Path, namespace: str, name: str, *phases: str,
                   timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = get(kubeconfig, namespace, "cl", name)
        if last is not None and (last.get("status") or {}).get("phase") in phases:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached {phases}; last status: "
                         f"{json.dumps((last or {}).get('status'), indent=1)}")


def wait_until(check: Any, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def live_instances(state: Path, namespace: str) -> dict[str, dict[str, Any]]:
    """The namespace's local instances whose processes are running, by member name."""
    found = {}
    for record_file in state.glob("instances/*/instance.json"):
        record = json.loads(record_file.read_text())
        pid = record.get("pid")
        if record["namespace"] == namespace and pid and _alive(pid):
            assert record["member"] not in found, f"two instances for {record['member']}"
            found[record["member"]] = record
    return found


def instance_directories(state: Path, namespace: str) -> list[Path]:
    """Every instance directory of the namespace, live or not."""
    return [p.parent for p in state.glob("instances/*/instance.json")
            if json.loads(p.read_text())["namespace"] == namespace]


def events(kubeconfig: Path, namespace: str, name: str) -> list[str]:
    listing = json.loads(kubectl(kubeconfig, "get", "events", "-n", namespace, "-o", "json",
                                 "--field-selector", f"involvedObject.name={name}").stdout)
    ordered = sorted(listing["items"], key=lambda e: e.get("lastTimestamp") or "")
    return [e["reason"] for e in ordered]


def netns_count() -> int:
    return sum(1 for n in os.listdir("/run/netns") if n.startswith("occ-")) if os.path.isdir(
        "/run/netns") else 0
