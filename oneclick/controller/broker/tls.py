"""The broker's TLS: a CA kept in a Secret (made on first start, or supplied by the cluster's
operator) and a serving certificate issued from it for the names members use to reach it."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from oneclick.controller.secrets import ensure_secret
from oneclick.kits.kube import JSON, KubeClient
from oneclick.kits.pki import CertificateAuthority, KeyPair


async def load_or_create_ca(kube: KubeClient, namespace: str, secret: str,
                            owner: JSON | None = None) -> CertificateAuthority:
    """The broker CA from Secret `secret` (keys tls.crt, tls.key), created (owned by `owner`)
    when it is absent."""

    def make() -> dict[str, bytes]:
        pair = CertificateAuthority.create("oneclick-broker-ca").keypair()
        return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}

    data = await ensure_secret(kube, namespace, secret, make, type="kubernetes.io/tls",
                               owner=owner)
    return CertificateAuthority.load(KeyPair(data["tls.crt"], data["tls.key"]))


def server_context(ca: CertificateAuthority, names: tuple[str, ...]) -> ssl.SSLContext:
    """A TLS 1.2+ server context with a fresh certificate for `names`."""
    pair = ca.issue("oneclick-broker", server_names=names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads keys from files only: a private directory that is gone right after.
    with tempfile.TemporaryDirectory(prefix="occ-broker-tls-") as directory:
        os.chmod(directory, 0o700)
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        pair.write(cert, key)
        context.load_cert_chain(cert, key)
    return context
