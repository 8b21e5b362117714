"""The API server's own ceiling: how many small status writes per second one Python process
gets on this machine. Contextualizing N members needs about 2N writes (identity and report),
so N / (this rate / 2) is the floor under `ctx_scale`'s figures.

    python -m bench.apiserver_ceiling [--objects 1000] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.harness import control_plane, prepare
from oneclick.api import API_VERSION
from oneclick.kits.kube import KubeClient
from oneclick.kits.resources import apply_body, custom_path

MANAGER = "bench"


async def measure(kube: KubeClient, names: list[str], concurrency: int, round_: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def writer() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            status = {"phase": "Contextualizing",
                      "identity": {"hostname": name, "fqdn": f"{name}.bench",
                                   "addresses": [f"198.51.100.{round_ % 250}"]}}
            await kube.apply(custom_path("LaunchMember", "default", name, "status"),
                             apply_body("LaunchMember", name, "default", status=status), MANAGER)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return len(names) / (time.perf_counter() - started)


async def main_async(objects: int, concurrencies: list[int]) -> None:
    with control_plane() as plane, tempfile.TemporaryDirectory():
        kube = KubeClient(Path(plane.kubeconfig))
        try:
            await prepare(kube)
            names = [f"ceiling-{i}" for i in range(objects)]
            for name in names:
                await kube.create(custom_path("LaunchMember", "default"), {
                    "apiVersion": API_VERSION, "kind": "LaunchMember",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"cluster": "ceiling", "role": "r", "index": 0, "image": "x",
                             "provider": "simulated"}})
            for round_, concurrency in enumerate(concurrencies, 1):
                rate = await measure(kube, names, concurrency, round_)
                print(f"status writes (server-side apply) with {concurrency:>3} in flight: "
                      f"{rate:7.0f}/s  -> floor for 1000 members: {2000 / rate:5.1f}s, "
                      f"5000 members: {10000 / rate:5.1f}s", flush=True)
        finally:
            await kube.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="The API server's status-write ceiling.")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    asyncio.run(main_async(args.objects, [int(c) for c in args.concurrency.split(",")]))


if __name__ == "__main__":
    main()
