"""How fast the development control plane builds and starts, and what it costs in memory.

    python -m bench.control_plane            # warm start (binaries already cached), 5 runs
    python -m bench.control_plane --cold     # also a cold build: empty binary and Go build caches

A cold build uses a fresh Go build cache but the machine's Go module cache, so it measures
compiling and linking, not downloading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from oneclick import controlplane
from oneclick.controlplane import binaries


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cold_build() -> float:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as gocache:
        saved = {k: os.environ.get(k) for k in ("OCC_CACHE_DIR", "GOCACHE")}
        os.environ.update(OCC_CACHE_DIR=cache, GOCACHE=gocache)
        try:
            started = time.monotonic()
            controlplane.ensure_binaries()
            return time.monotonic() - started
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def warm_starts(runs: int) -> None:
    controlplane.ensure_binaries(log=False)
    times, etcd_rss, api_rss = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as workdir:
            started = time.monotonic()
            plane = controlplane.start(Path(workdir))
            times.append(time.monotonic() - started)
            time.sleep(2)  # let both settle after /readyz before reading their memory
            assert plane.etcd_pid and plane.apiserver_pid
            etcd_rss.append(_rss_mib(plane.etcd_pid))
            api_rss.append(_rss_mib(plane.apiserver_pid))
            plane.stop()
    print(f"warm start to /readyz: median {statistics.median(times):.2f}s "
          f"(min {min(times):.2f}s, max {max(times):.2f}s, {runs} runs)")
    print(f"memory after start (RSS): kube-apiserver {statistics.median(api_rss):.0f} MiB, "
          f"etcd {statistics.median(etcd_rss):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--cold", action="store_true", help="also time a cold build")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"kubernetes {binaries.KUBERNETES.release}, etcd {binaries.ETCD.release}, "
          f"{os.cpu_count()} cores")
    if args.cold:
        print(f"cold build (kube-apiserver, kubectl, etcd): {cold_build():.0f}s")
    warm_starts(args.runs)


if __name__ == "__main__":
    main()
