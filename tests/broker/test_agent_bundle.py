"""The agent as one file (`oneclick-agent.pyz`): run by a stock Python with nothing of ours
installed, it contextualizes a member against the real broker, and it carries the agent's
three libraries, none of the operator's."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from oneclick.controlplane import agent_bundle
from tests.broker.staging import make_image, member_status, stage_launch, start_agent
from tests.controller_process import ControllerProcess

STOCK_PYTHON = "/usr/bin/python3"  # Debian's: no pydantic, no httpx, nothing of ours
OPERATOR_ONLY = ("kopf", "kubernetes", "boto3", "botocore", "asyncssh", "aiohttp", "click",
                 "rich", "prometheus_client")


@pytest.fixture(scope="module")
def bundle() -> Path:
    return agent_bundle.build(log=False)


def stock(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STOCK_PYTHON, "-I", *args], capture_output=True, text=True,
                          check=False, env={"OCC_AGENT_CACHE": str(cache), "PATH": "/usr/bin"})


def test_the_bundle_carries_the_agent_and_its_libraries_only(bundle: Path,
                                                              tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        top = {name.split("/")[1] for name in archive.namelist() if name.startswith("lib/")}
    assert {"oneclick", "pydantic", "pydantic_core", "httpx", "cryptography"} <= top
    assert not top & set(OPERATOR_ONLY), top & set(OPERATOR_ONLY)
    assert stock("-c", "import pydantic", cache=tmp_path).returncode != 0  # (truly stock)
    # Run by the stock interpreter: it unpacks itself once, and the operator's libraries are
    # not there to import.
    helped = stock(str(bundle), "--help", cache=tmp_path)
    assert helped.returncode == 0 and "occ-agent" in helped.stdout, helped.stderr
    [unpacked] = tmp_path.glob("agent-*/lib")
    probe = stock("-c", f"import sys; sys.path.insert(0, {str(unpacked)!r}); "
                        "import oneclick.agent.main; import kopf", cache=tmp_path)
    assert "No module named 'kopf'" in probe.stderr, probe.stderr
    assert not (unpacked / "oneclick" / "controller").exists()


def test_the_bundle_contextualizes_a_member_with_a_stock_python(
    bundle: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes, tmp_path: Path,
) -> None:
    spec = {"roles": [{"name": "solo", "image": "base-cluster"}], "hostsFile": True,
            "sshHostBased": True}
    [member] = stage_launch(kubeconfig, namespace, "bare", spec, token_key).values()
    root = tmp_path / "root"
    make_image(root, {"ready.d/99-ready": 0})
    agent = start_agent(root, member.bootstrap(namespace, "bare", controller.broker_url,
                                               controller.ca_pem()),
                        "solo-0", "127.30.0.1",
                        agent=[STOCK_PYTHON, "-I", str(bundle)])
    output, _ = agent.communicate(timeout=180)
    assert agent.returncode == 0, output
    status = member_status(kubeconfig, namespace, member.name)
    assert status["phase"] == "Ready" and status["report"]["ok"] is True
    assert "solo-0.oneclick.local" in (root / "etc" / "hosts").read_text()
