"""The local provider on its own: idempotent launches, loopback members without root's
namespaces, and clear refusals."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from oneclick.api.protocol import Bootstrap
from oneclick.controller.providers import InstanceState, LaunchRequest, ProviderError
from oneclick.controller.providers.local import LocalProvider, boot

SSHD = "/usr/sbin/sshd"

BOOTSTRAP = Bootstrap(broker_url="https://127.0.0.1:9", ca_cert="-----BEGIN CERTIFICATE-----",
                      namespace="ns", cluster="c", member="c-solo-0", token="t" * 43)


def request(image: str = "base-cluster", key: str = "uid-1") -> LaunchRequest:
    return LaunchRequest(idempotency_key=key, namespace="ns", cluster="c", member="c-solo-0",
                         role="solo", index=0, image=image, size=None,
                         user_data=BOOTSTRAP.model_dump_json(by_alias=True))


async def test_members_without_namespaces_get_loopback_addresses(
    tmp_path: Path, images: Path,
) -> None:
    provider = LocalProvider(state_dir=tmp_path, images_dir=images, namespaced=False)
    assert provider.broker_host == "127.0.0.1"
    assert any("sshd" in limit for limit in provider.limitations())
    first = await provider.launch(request())
    again = await provider.launch(request())  # the same key: the same instance, not a second
    assert again.id == first.id and len(provider.records()) == 1
    assert first.addresses[0].startswith("127.213.")
    assert (await provider.describe([first.id]))[first.id].state == InstanceState.RUNNING
    root = tmp_path / "instances" / "uid-1" / "root"
    assert (root / "etc/oneclick/roles.d/batch-server").is_file()  # made from the image
    assert (root / "var/lib/oneclick/bootstrap.json").stat().st_mode & 0o777 == 0o600
    assert (await provider.lookup("uid-1")) is not None
    await provider.terminate([first.id])
    assert (await provider.describe([first.id]))[first.id].state == InstanceState.TERMINATED
    assert not (tmp_path / "instances" / "uid-1").exists()
    assert await provider.lookup("uid-1") is None


async def test_an_unknown_image_is_a_permanent_error_naming_the_folder(
    tmp_path: Path, images: Path,
) -> None:
    provider = LocalProvider(state_dir=tmp_path, images_dir=images, namespaced=False)
    with pytest.raises(ProviderError) as raised:
        await provider.launch(request(image="no-such-image"))
    assert raised.value.permanent
    assert f"unknown image 'no-such-image': there is no folder {images}/no-such-image" in str(
        raised.value)


def test_a_members_sshd_survives_the_reload_its_init_asks_the_moment_it_starts(
    tmp_path: Path,
) -> None:
    """The init reloads sshd (SIGHUP) once the agent says the member is configured. An agent
    that says so at once (a restart with nothing new) must not end sshd, which dies of a
    SIGHUP that comes before it has set its handler: the reload waits for that handler."""
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with socket.socket() as probe:  # a free port for this sshd
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (f"mkdir -p /run/sshd\n"
              f"{SSHD} -D -e -f /dev/null -h {key} -p {port} -o ListenAddress=127.0.0.1 "
              f"-o PidFile=none 2>/dev/null &\nsshd=$!\n"
              f"{boot.RELOAD_SSHD}\nsleep 0.5\n"
              "if kill -0 $sshd; then echo alive; fi\nkill $sshd\n")
    for _ in range(5):  # (a few times: when the signal lands varies)
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                             check=False)
        assert ran.stdout.strip() == "alive", ran.stderr
