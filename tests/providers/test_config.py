"""The providers file: a mistake in it stops the controller at once, named by file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "a host key that is not one": ("""\
providers:
  - name: lab
    type: ssh
    brokerHost: 10.0.0.1
    privateKey: {secret: lab-ssh, key: id_ed25519}
    hosts:
      - address: 10.0.0.5
        hostKeys:
          - ssh-ed25519 AAAAnotakey
""", ":9: providers[0].hosts[0].hostKeys: Value error, not an SSH public key"),
    "a pool for a namespace that cannot be one": ("""\
providers:
  - name: lab
    type: ssh
    brokerHost: 10.0.0.1
    privateKey: {secret: lab-ssh, key: id_ed25519}
    allowedNamespaces: [physics, ../kube-system]
    hosts:
      - address: 10.0.0.5
        hostKeys:
          - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFUt8Or2LRsbhbWN3trRwWoKQchGXsn2i0iVZuWj2wHW
""",
        ":6: providers[0].allowedNamespaces: Value error, not a namespace name: "
        "'../kube-system'"),
    "an ec2 provider without a region": ("""\
providers:
  - name: aws
    type: ec2
    brokerHost: broker.example.org
    credentials: {secret: aws-credentials}
""", ":2: providers[0].region: Field required"),
    "a provider of no known type": ("""\
providers:
  - name: gcp
    type: gce
""", ":2: providers[0]: Input tag 'gce' found using 'type' does not match any of the "
     "expected tags: 'ssh', 'ec2'"),
    "a name taken twice": ("""\
providers:
  - {name: local, type: ec2, region: r, brokerHost: b, credentials: {secret: s}}
""", ":2: providers: Value error, provider name 'local' is taken"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_providers_file_stops_the_controller_naming_file_and_line(
        case: str, tmp_path: Path) -> None:
    text, expected = CASES[case]
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    result = subprocess.run([str(Path(sys.executable).parent / "occ-controller")],
                            env={**os.environ, "OCC_PROVIDERS_FILE": str(path)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"occ-controller: {path}{expected}"), result.stderr
