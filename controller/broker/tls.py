"""The broker's TLS: a CA kept in a Secret (made on first start, or supplied by the cluster's
operator) and a serving certificate issued from it for the names VMs use to reach the broker."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from pathlib import Path

from controller.kube import ApiError, KubeClient, core_path
from kits.pki import CertificateAuthority, KeyPair


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def load_or_create_ca(kube: KubeClient, namespace: str, secret: str) -> CertificateAuthority:
    """The broker CA from Secret `secret` (keys tls.crt, tls.key), created when it is absent."""
    path = core_path("secrets", namespace, secret)
    try:
        data = (await kube.get(path))["data"]
        return CertificateAuthority.load(KeyPair(base64.b64decode(data["tls.crt"]),
                                                 base64.b64decode(data["tls.key"])))
    except ApiError as error:
        if error.status != 404:
            raise
    ca = CertificateAuthority.create("oneclick-broker-ca")
    pair = ca.keypair()
    body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "oneclick"}},
            "data": {"tls.crt": _b64(pair.cert_pem), "tls.key": _b64(pair.key_pem)}}
    try:
        await kube.create(core_path("secrets", namespace), body)
    except ApiError as error:
        if error.status != 409:  # another replica made it first: use theirs
            raise
        return await load_or_create_ca(kube, namespace, secret)
    return ca


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
