"""kube-controller-manager and kube-scheduler: their credentials and command lines.

Each signs in as a real cluster's does, with a client certificate of our CA whose user the
API server's built-in RBAC already binds (`system:kube-controller-manager`,
`system:kube-scheduler`); the same certificate serves its `/healthz` on loopback, so a
health check can verify it against our CA.
"""

from __future__ import annotations

from pathlib import Path

from oneclick.controlplane import kubeconfig
from oneclick.kits.pki import CertificateAuthority

CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
LOOPBACK = ("127.0.0.1", "localhost")


def write_credentials(pki: Path, ca: CertificateAuthority, server: str) -> None:
    """`<name>.crt/.key` and `<name>.kubeconfig` in `pki` for both components."""
    for name in (CONTROLLER_MANAGER, SCHEDULER):
        user = f"system:{name}"
        pair = ca.issue(user, server_names=LOOPBACK, client=True)
        pair.write(pki / f"{name}.crt", pki / f"{name}.key")
        kubeconfig.write(pki / f"{name}.kubeconfig", server, ca.cert_pem, pair.cert_pem,
                         pair.key_pem, user=user)


def _common(name: str, pki: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={pki / f'{name}.kubeconfig'}",
        # No --authentication/authorization-kubeconfig: its own API then answers /healthz
        # (open to anyone) and nothing else, and it needs no front-proxy CA from the API server.
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / f'{name}.crt'}",
        f"--tls-private-key-file={pki / f'{name}.key'}",
        "--leader-elect=false",  # the only one
    ]


def controller_manager_args(binary: Path, pki: Path, port: int) -> list[str]:
    """Every default controller: namespace deletion, garbage collection (owner references),
    service accounts and their tokens, deployments, ... each with its own service account."""
    return [
        str(binary),
        *_common(CONTROLLER_MANAGER, pki, port),
        "--controllers=*",
        "--use-service-account-credentials",
        f"--service-account-private-key-file={pki / 'sa.key'}",  # the API server's signing key
        f"--root-ca-file={pki / 'ca.crt'}",  # published as kube-root-ca.crt in every namespace
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",  # CSRs (a node's kubelet) signed by
        f"--cluster-signing-key-file={pki / 'ca.key'}",  # the same CA
        "--profiling=false",
        "--v=0",
    ]


def scheduler_args(binary: Path, pki: Path, port: int) -> list[str]:
    return [str(binary), *_common(SCHEDULER, pki, port), "--v=0"]
