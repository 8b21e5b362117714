"""The agent alone (the single-file bundle; the oneclick-agent distribution) against the full
package: installed size, and cold start (from the command to the agent's first connection to
its broker).

    python -m bench.agent_bundle [--runs 5]

The "broker" here is a TCP listener that notes when the first connection arrives and closes
it (the agent then retries; the run is ended). The bundle runs under Debian's /usr/bin/python3
(nothing of ours installed), once unpacking itself (first run) and then warm; the full
package's `occ-agent` runs from this environment. The two distributions are built here
(`python -m build`) and installed from their wheels into fresh virtual environments that hold
nothing else (no pip): oneclick-agent alone, and oneclick-clusters (which brings
oneclick-agent); their site-packages are measured, and each one's `occ-agent` timed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from oneclick.api.protocol import Bootstrap
from oneclick.controlplane import agent_bundle
from oneclick.kits.pki import CertificateAuthority

STOCK_PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "hack" / "constraints.txt"


def distribution_closure(name: str) -> set[str]:
    """The distribution and every one it requires (no extras), by normalized name."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop().lower().replace("_", "-")
        if current in seen:
            continue
        try:
            dist = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            continue
        seen.add(current)
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0]
                        .split("=")[0].split("!")[0].split("~")[0].strip())
    return seen


def installed_mib(names: set[str]) -> float:
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def release_wheels(dist: Path) -> dict[str, Path]:
    """Both distributions' wheels, as a release builds them."""
    for project in (ROOT, ROOT / "distributions" / "oneclick-agent"):
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist),
                        str(project)], check=True, capture_output=True)
    return {"oneclick-agent": next(dist.glob("oneclick_agent-*.whl")),
            "oneclick-clusters": next(dist.glob("oneclick_clusters-*.whl"))}


def installed_venv(where: Path, wheel: Path, links: Path) -> tuple[Path, float, int]:
    """A virtual environment with `wheel` and what it requires (found in `links`, then the
    index), nothing else: its occ-agent, the size of its site-packages and how many
    distributions it holds."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--disable-pip-version-check", "-c", str(CONSTRAINTS), "--find-links",
                    str(links), str(wheel)], check=True)
    [site] = where.glob("lib/python*/site-packages")
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    return where / "bin" / "occ-agent", size / 2**20, len(list(site.glob("*.dist-info")))


def first_connection(command: list[str], work: Path) -> float:
    """Seconds from starting `command` (an agent) to its first connection to the broker."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(60)
    ca = CertificateAuthority.create("bench").keypair()
    bootstrap = Bootstrap(broker_url=f"https://127.0.0.1:{listener.getsockname()[1]}",
                          ca_cert=ca.cert_pem.decode(), namespace="bench", cluster="bench",
                          member="bench-solo-0", token="x" * 43, domain="oneclick.local")
    (work / "bootstrap.json").write_text(json.dumps(bootstrap.wire()))
    started = time.perf_counter()
    agent = subprocess.Popen([*command, "--bootstrap", str(work / "bootstrap.json"), "--root",
                              str(work / "root"), "--hostname", "solo-0", "--address",
                              "127.40.0.1"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        connection, _ = listener.accept()
        took = time.perf_counter() - started
        connection.close()
    finally:
        agent.kill()
        agent.wait()
        listener.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bundle = agent_bundle.build()
    full = distribution_closure("oneclick-clusters")
    slim = distribution_closure("pydantic") | distribution_closure("httpx") | (
        distribution_closure("cryptography"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "root").mkdir()
        cache = work / "cache"
        stock = [STOCK_PYTHON, "-I", str(bundle)]
        os.environ["OCC_AGENT_CACHE"] = str(cache)  # (a fresh cache: the first run unpacks)
        first = first_connection(stock, work)
        unpacked = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
        warm = [first_connection(stock, work) for _ in range(args.runs)]
        agent = str(Path(sys.executable).parent / "occ-agent")
        full_runs = [first_connection([agent], work) for _ in range(args.runs)]
        wheels = release_wheels(work / "dist")
        slim_agent, slim_mib, slim_count = installed_venv(
            work / "slim", wheels["oneclick-agent"], work / "dist")
        full_agent, full_mib, full_count = installed_venv(
            work / "full", wheels["oneclick-clusters"], work / "dist")
        first_connection([str(slim_agent)], work)  # (each once first: its files in the cache)
        first_connection([str(full_agent)], work)
        slim_runs, full_installed_runs = [], []
        for _ in range(args.runs):  # (alternating: both see the same machine)
            slim_runs.append(first_connection([str(slim_agent)], work))
            full_installed_runs.append(first_connection([str(full_agent)], work))
    print(json.dumps({
        "bundle_mib": round(bundle.stat().st_size / 2**20, 1),
        "bundle_unpacked_mib": round(unpacked, 1),
        "agent_libraries_installed_mib": round(installed_mib(slim), 1),
        "full_package_installed_mib": round(installed_mib(full), 1),
        "full_package_distributions": len(full),
        "site_packages_mib": {"oneclick_agent_alone": round(slim_mib, 1),
                              "oneclick_clusters": round(full_mib, 1)},
        "site_packages_distributions": {"oneclick_agent_alone": slim_count,
                                        "oneclick_clusters": full_count},
        "cold_start_s": {"bundle_first_run": round(first, 3),
                         "bundle_warm_median": round(statistics.median(warm), 3),
                         "full_package_median": round(statistics.median(full_runs), 3),
                         "oneclick_agent_alone_median": round(statistics.median(slim_runs), 3),
                         "oneclick_clusters_installed_median": round(
                             statistics.median(full_installed_runs), 3)},
        "runs": args.runs,
    }, indent=1))


if __name__ == "__main__":
    main()
