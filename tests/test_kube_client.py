"""Our Kubernetes client against the real API server: each kind of refusal is its own error
type, so callers say `except NotFound` instead of comparing status codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oneclick.kits.kube import (
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    KubeClient,
    NotFound,
    Unreachable,
    core_path,
)


def test_each_refusal_has_its_own_type(kubeconfig: Path, namespace: str) -> None:
    async def run() -> None:
        kube = KubeClient(kubeconfig)
        try:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "once", "namespace": namespace}, "data": {"a": "b"}}
            with pytest.raises(NotFound) as missing:
                await kube.get(core_path("configmaps", namespace, "nothing-here"))
            assert missing.value.status == 404
            await kube.create(core_path("configmaps", namespace), body)
            with pytest.raises(Conflict):
                await kube.create(core_path("configmaps", namespace), body)
            bad = {**body, "metadata": {"name": "Not_A_Name", "namespace": namespace}}
            with pytest.raises(Invalid) as invalid:
                await kube.create(core_path("configmaps", namespace), bad)
            assert "Not_A_Name" in str(invalid.value.reason)
            # Every one of them is still an ApiError, for code that handles any refusal.
            assert issubclass(NotFound, ApiError) and issubclass(Forbidden, ApiError)
        finally:
            await kube.aclose()

    asyncio.run(run())


def test_an_api_server_that_does_not_answer_is_unreachable(kubeconfig: Path,
                                                           tmp_path: Path) -> None:
    text = kubeconfig.read_text()
    server = next(line.split("server:")[1].strip() for line in text.splitlines()
                  if "server:" in line)
    nowhere = tmp_path / "nowhere.kubeconfig"
    nowhere.write_text(text.replace(server, "https://127.0.0.1:1"))

    async def run() -> None:
        kube = KubeClient(nowhere)
        try:
            with pytest.raises(Unreachable):
                await kube.get("/api/v1/namespaces/default")
        finally:
            await kube.aclose()

    asyncio.run(run())
