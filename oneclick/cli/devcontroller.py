"""The controller of `occ dev up`: our CRDs installed and one `occ-controller` process beside
the development control plane, started once and reused.

Its ports are chosen at the first start and kept in the control plane's workdir (PORTS, which a
crash leaves alone): members' bootstraps name the broker's port, so a controller started again
after a crash must listen where they look.

It serves the single-file agent (oneclick-agent.pyz, built from these sources and cached:
oneclick/controlplane/agent_bundle.py) to members whose image has none, from a copy in the
workdir (AGENT: a controller that runs serves one file, whatever is built meanwhile), unless
OCC_AGENT_BUNDLE already names a file or it is asked not to. SERVED records which it serves, so
that `occ dev up` can say when the controller it reuses serves another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from oneclick.api.crd import KINDS
from oneclick.controlplane import ControlPlane, agent_bundle
from oneclick.controlplane.local import free_port
from oneclick.kits.kube import ApiError, KubeClient
from oneclick.kits.processes import running as _alive
from oneclick.kits.resources import custom_path

NAMESPACE = "oneclick-system"
STATE = "controller.json"  # the running controller: its pid and ports (gone when it stops)
PORTS = "ports.json"  # the ports, chosen once per control plane
AGENT = "oneclick-agent.pyz"  # the agent file the broker serves (its copy for this controller)
SERVED = "controller-agent.json"  # the agent file the running controller serves, and its build
SERVES = {"broker_port": "the context broker", "metrics_port": "the metrics endpoint",
          "health_port": "the liveness endpoint"}


class PortTaken(RuntimeError):
    """A kept port is in use by another program; the message says what to do."""


def kept_ports(workdir: Path) -> dict[str, int]:
    """The controller's ports for this control plane: chosen at its first start, then the
    same at every start."""
    path = workdir / PORTS
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept, dict) and set(kept) == set(SERVES) and all(
                isinstance(p, int) and 0 < p < 65536 for p in kept.values()):
            return {name: int(kept[name]) for name in SERVES}
    except (OSError, ValueError):
        pass
    chosen: dict[str, int] = {}
    while len(chosen) < len(SERVES):
        port = lasting_port()
        if port not in chosen.values():
            chosen[list(SERVES)[len(chosen)]] = port
    tmp = path.with_name(PORTS + ".tmp")
    tmp.write_text(json.dumps(chosen) + "\n")
    tmp.rename(path)
    return chosen


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # (Linux's default)


def lasting_port() -> int:
    """A free port outside the kernel's ephemeral range: kept across restarts, it must not be
    one that any outgoing connection (an agent retrying, say) may be given while the
    controller is down."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 65536) if not low <= p <= high]
    for port in random.sample(candidates, 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))  # noqa: S104  (as the broker will listen)
            except OSError:
                continue
            return port
    return free_port()  # (all taken: an ephemeral one rather than none)


def check_free(ports: dict[str, int], kept_in: Path, patience: float = 10.0) -> None:
    """Each kept port can be listened on (as the controller will: every address, reusing one
    a crashed controller left in TIME_WAIT), waiting up to `patience` seconds for one a
    crashed controller's last connections still hold; PortTaken naming the port and the way
    out if not. Never another port silently: running members know the broker by this one."""
    deadline, waited = time.monotonic() + patience, set()
    for name, port in ports.items():
        while (error := _cannot_listen(port)) is not None:
            if time.monotonic() > deadline:
                raise PortTaken(
                    f"port {port} ({SERVES[name]} of the development control plane, kept in "
                    f"{kept_in} because members launched earlier know it) is in use by "
                    f"another program ({error.strerror}): stop that program (`ss -ltnp "
                    f"'sport = :{port}'` names it) and run `occ dev up` again, or remove "
                    f"{kept_in} to choose new ports (running members are then handed a new "
                    "bootstrap)") from error
            if port not in waited:
                waited.add(port)
                print(f"port {port} ({SERVES[name]}) is held ({error.strerror}); waiting up to "
                      f"{patience:.0f} s for it", file=sys.stderr)
            time.sleep(0.25)


def _cannot_listen(port: int) -> OSError | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104  where the controller listens
        except OSError as error:
            return error
    return None


async def install_crds(kube: KubeClient) -> None:
    """Our CRDs, applied from the models (no files needed), and the controller's namespace."""
    for kind in KINDS:
        definition = kind.definition()
        await kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                         f"{kind.name}", definition, "occ-dev")
    for _ in range(100):  # established, and served
        try:
            await kube.list(custom_path("ClusterLaunch", "default"))
            break
        except ApiError:
            await asyncio.sleep(0.2)
    with contextlib.suppress(ApiError):
        await kube.create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})


def running(workdir: Path) -> dict[str, int] | None:
    try:
        state: dict[str, int] = json.loads((workdir / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state["pid"]) else None


def served_agent(workdir: Path, serve: bool = True) -> Path | None:
    """The agent file a controller started in `workdir` serves: OCC_AGENT_BUNDLE's when the
    environment names one, else its copy of this checkout's bundle; None when not `serve`."""
    if not serve:
        return None
    return Path(os.environ["OCC_AGENT_BUNDLE"]) if os.environ.get("OCC_AGENT_BUNDLE") else (
        workdir / AGENT)


def agent_file(workdir: Path, serve: bool = True) -> Path | None:
    """The agent file ready to serve (served_agent): this checkout's bundle, built the first
    time (saying so: it takes a while), copied into `workdir`. RuntimeError saying why when
    it cannot be built."""
    served = workdir / AGENT
    chosen = served_agent(workdir, serve)
    if chosen != served:
        served.unlink(missing_ok=True)  # (a copy an earlier start left)
        return chosen
    cold = not agent_bundle.bundle_path().exists()
    if cold:
        print("building the single-file agent the broker serves to members whose image has "
              "none (once, then cached: pip fetches its libraries; `occ dev up --no-agent` "
              "skips it) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        built = agent_bundle.build(log=False)
    except agent_bundle.BundleError as error:
        raise RuntimeError(f"the agent file could not be built ({error}); `occ dev up "
                           "--no-agent` starts the controller without it") from error
    if cold:
        print(f"built {built} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    staged = served.with_name(AGENT + ".tmp")
    shutil.copyfile(built, staged)
    staged.replace(served)  # (whole or absent, for a broker that reads it)
    return served


def _record_served(workdir: Path, served: Path | None) -> None:
    """What a controller started now serves: the file, and the build of this checkout it is a
    copy of (if it is one)."""
    build = agent_bundle.bundle_path().name if served == workdir / AGENT else ""
    (workdir / SERVED).write_text(json.dumps({"file": str(served or ""), "build": build}))


def agent_differs(workdir: Path, serve: bool = True) -> str | None:
    """For the controller that runs in `workdir`: how the agent file it serves differs from
    what `occ dev up` was asked for now (None: it does not, or it is not known)."""
    try:
        record = json.loads((workdir / SERVED).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    serving, build = (str(record.get(k) or "") for k in ("file", "build"))
    wanted = served_agent(workdir, serve)
    if wanted is None:
        return f"it serves the agent file {serving} (--no-agent was asked for)" if serving else None
    if not serving:
        return "it serves no agent file (it was started with --no-agent)"
    if wanted != Path(serving):
        return f"it serves the agent file {serving}, not {wanted}"
    if wanted == workdir / AGENT and build != agent_bundle.bundle_path().name:
        return (f"it serves the agent built from this checkout's sources as they were when it "
                f"started ({serving}, {build}), and they have changed since")
    return None  # (OCC_AGENT_BUNDLE's file: the broker serves it as it is now)


def start(plane: ControlPlane, agent: bool = True) -> tuple[dict[str, int], bool]:
    """Start the controller for `plane` unless it runs already; True when it was started.
    `agent`: it serves the agent file (agent_file)."""
    assert plane.workdir is not None
    current = running(plane.workdir)
    if current is not None:
        return current, False

    async def prepare() -> None:
        kube = KubeClient(plane.kubeconfig)
        try:
            await install_crds(kube)
        finally:
            await kube.aclose()

    ports = kept_ports(plane.workdir)
    check_free(ports, plane.workdir / PORTS)
    served = agent_file(plane.workdir, agent)
    _record_served(plane.workdir, served)
    asyncio.run(prepare())
    state = dict(ports)
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "OCC_NAMESPACE": NAMESPACE,
           "OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104  members reach it over their bridge
           "OCC_BROKER_PORT": str(state["broker_port"]),
           "OCC_METRICS_PORT": str(state["metrics_port"]),
           "OCC_HEALTH_PORT": str(state["health_port"]),
           "OCC_AGENT_BUNDLE": str(served or "")}
    binary = shutil.which("occ-controller") or str(Path(sys.executable).parent / "occ-controller")
    log = plane.workdir / "controller.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    state["pid"] = process.pid
    (plane.workdir / STATE).write_text(json.dumps(state))
    deadline = time.monotonic() + 60
    while "context broker listening" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"occ-controller did not start; its log {log} ends with:\n"
                               + "\n".join(log.read_text().splitlines()[-15:]))
        time.sleep(0.2)
    return state, True


def stop(plane: ControlPlane, timeout: float = 120.0) -> None:
    """Terminate every launch (so no instance outlives the controller), then the controller."""
    assert plane.workdir is not None
    state = running(plane.workdir)
    if state is None:
        return

    async def terminate_all() -> None:
        kube = KubeClient(plane.kubeconfig)
        try:
            launches = await kube.list(custom_path("ClusterLaunch"))
            for item in launches.get("items", []):
                meta = item["metadata"]
                with contextlib.suppress(ApiError):
                    await kube.delete(custom_path("ClusterLaunch", meta["namespace"],
                                                  meta["name"]))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not (await kube.list(custom_path("LaunchMember"))).get("items"):
                    break
                await asyncio.sleep(1)
        finally:
            await kube.aclose()

    asyncio.run(terminate_all())
    os.kill(state["pid"], signal.SIGTERM)
    for _ in range(200):
        if not _alive(state["pid"]):
            break
        time.sleep(0.1)
    else:
        os.kill(state["pid"], signal.SIGKILL)
    (plane.workdir / STATE).unlink()
    (plane.workdir / SERVED).unlink(missing_ok=True)

