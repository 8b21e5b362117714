"""The agent's first steps inside a member: where its bootstrap comes from, and host keys of
its own (real files, a real metadata server on loopback, real ssh-keygen)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from oneclick.agent import bootstrap, hostkeys
from oneclick.api.protocol import Bootstrap

BOOTSTRAP = Bootstrap(broker_url="https://203.0.113.7:8443", ca_cert="-----BEGIN CERTIFICATE-----",
                      namespace="default", cluster="grid", member="grid-head-node-0",
                      token="t" * 43)


class Metadata(BaseHTTPRequestHandler):
    """EC2's instance metadata service, IMDSv2 only: no session token, no user data."""

    token = "session-token-123"

    def do_PUT(self) -> None:
        assert self.path == "/latest/api/token"
        assert self.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
        self._answer(200, self.token)

    def do_GET(self) -> None:
        if self.path == "/latest/user-data" and self.headers.get(
                "X-aws-ec2-metadata-token") == self.token:
            self._answer(200, json.dumps(BOOTSTRAP.wire()))
        else:
            self._answer(401, "")

    def _answer(self, code: int, body: str) -> None:
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def metadata_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_bootstrap_comes_from_imdsv2_with_a_session_token(
    metadata_service: str, tmp_path: Path,
) -> None:
    found = bootstrap.read(None, tmp_path, metadata_service)
    assert found == BOOTSTRAP


def test_cloud_init_user_data_comes_before_the_metadata_service(tmp_path: Path) -> None:
    user_data = tmp_path / "var/lib/cloud/instance/user-data.txt"
    user_data.parent.mkdir(parents=True)
    user_data.write_text(json.dumps(BOOTSTRAP.wire()))
    assert bootstrap.read(None, tmp_path, "http://127.0.0.1:9") == BOOTSTRAP


def test_no_bootstrap_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(bootstrap.BootstrapNotFound) as raised:
        bootstrap.read(None, tmp_path, "http://127.0.0.1:9")
    message = str(raised.value)
    assert "user-data.txt" in message and "metadata service" in message and "--bootstrap" in message


def test_a_file_that_is_not_a_bootstrap_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text('{"brokerUrl": "https://x"}')
    with pytest.raises(bootstrap.BootstrapNotFound, match="is not a OneClick bootstrap"):
        bootstrap.read(path, tmp_path)


def test_host_keys_are_made_once_and_kept(tmp_path: Path) -> None:
    keys = hostkeys.ensure(tmp_path)
    assert sorted(k.split()[0] for k in keys) == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    for kind, bits in (("ed25519", "256"), ("ecdsa", "256")):
        private = tmp_path / "etc/ssh" / f"ssh_host_{kind}_key"
        assert private.stat().st_mode & 0o777 == 0o600
        fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(private)],
                                     capture_output=True, text=True, check=True).stdout
        assert kind.upper() in fingerprint and fingerprint.split()[0] == bits, fingerprint
    assert hostkeys.ensure(tmp_path) == keys  # a second boot keeps them


def test_an_image_with_keys_keeps_its_own(tmp_path: Path) -> None:
    ssh = tmp_path / "etc/ssh"
    ssh.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f",
                    str(ssh / "ssh_host_rsa_key")], check=True)
    own = (ssh / "ssh_host_rsa_key").read_bytes()
    keys = hostkeys.ensure(tmp_path)
    assert {k.split()[0] for k in keys} == {"ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"}
    assert (ssh / "ssh_host_rsa_key").read_bytes() == own


def test_the_agent_starts_without_what_only_the_operator_and_the_schemas_need() -> None:
    """A member pays for the agent's imports at every boot: not for httpx's command line
    (installed here, with the CLI's rich), nor for reading the models' source for field
    descriptions that only the CRDs and the OpenAPI document carry."""
    probe = ("import sys, linecache, oneclick.agent.main\n"
             "assert linecache.cache == {}, sorted(linecache.cache)\n"
             "print(sorted({'click', 'rich', 'pygments', 'kopf', 'kubernetes'} & {"
             "name.split('.')[0] for name in sys.modules}))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True)
    assert shown.stdout.strip() == "[]", shown
    assert importlib.util.find_spec("rich") is not None  # (so that check means something)
