"""SSH host keys: the member's own, made at its first boot when the image has none, so no
private key ever lives on an image."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

# Two kinds, as OpenSSH's clients prefer them. No RSA: a 3072-bit key takes 25 to 300 ms of
# CPU to make (a member's first boot, on the critical path of its launch), an ECDSA P-256 key
# well under one; every OpenSSH client since 5.7 (2011) accepts ECDSA host keys. Made in this
# order: the local provider's init starts sshd once the last one is there.
KEY_TYPES = ("ed25519", "ecdsa")


def _generate(kind: str) -> tuple[bytes, bytes]:
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
        ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public


def ensure(root: Path, comment: str = "") -> list[str]:
    """Make the missing host keys under <root>/etc/ssh; return every host public key line."""
    directory = root / "etc" / "ssh"
    directory.mkdir(parents=True, exist_ok=True)
    for kind in KEY_TYPES:
        private_path = directory / f"ssh_host_{kind}_key"
        if private_path.exists():
            continue
        private, public = _generate(kind)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private)
        line = public.decode() + (f" {comment}" if comment else "")
        (directory / f"ssh_host_{kind}_key.pub").write_text(line + "\n")
    keys = []
    for public_path in sorted(directory.glob("ssh_host_*_key.pub")):
        fields = public_path.read_text().split()
        if len(fields) >= 2:
            keys.append(f"{fields[0]} {fields[1]}")
    return keys
