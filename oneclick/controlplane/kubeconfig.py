"""Kubeconfig files for client certificates, with everything embedded."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CONTEXT = "oneclick-dev"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
          user: str = "user") -> None:
    """A self-contained kubeconfig for one client certificate (readable by its owner only)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_admin(path: Path, server: str, pki: Path) -> None:
    """The kubeconfig of the development control plane's `system:masters` admin."""
    write(path, server, (pki / "ca.crt").read_bytes(), (pki / "admin.crt").read_bytes(),
          (pki / "admin.key").read_bytes(), user="oneclick-admin")
