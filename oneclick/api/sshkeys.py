"""SSH host public keys as a member may state them: `TYPE BASE64`, nothing else.

A key line ends up after a host field in other members' ssh_known_hosts and in the user's
known_hosts, where a newline, a marker (`@cert-authority`) or a second key would be trusted as
the file's own. So a key is one line of exactly two fields, a host key type OpenSSH uses, and
canonical base64 of a key blob of that very type that parses as such.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-rsa")
KEY_LIMIT = 8 * 1024
RSA_MINIMUM_BITS = 1024  # what OpenSSH itself refuses below
# For the JSON schema (CRD, OpenAPI); host_key() below is the real check.
KEY_PATTERN = (r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) "
               r"[A-Za-z0-9+/]+={0,2}$")

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _blob_type(blob: bytes) -> bytes:
    """The type string a key blob starts with (SSH wire format: uint32 length, then it)."""
    length = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + length:
        raise ValueError("the key data is truncated")
    return blob[4:4 + length]


def host_key(value: str) -> str:
    """Check one host key line; returns it unchanged."""
    if len(value) > KEY_LIMIT:
        raise ValueError(f"must be at most {KEY_LIMIT} characters")
    fields = value.split(" ")
    if len(fields) != 2:
        raise ValueError("must be one line of two fields, TYPE BASE64, with no comment")
    kind, encoded = fields
    if kind not in KEY_TYPES:
        raise ValueError(f"must be a host key of type {', '.join(KEY_TYPES)}")
    if not _BASE64.fullmatch(encoded):
        raise ValueError("the key data must be base64")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("the key data must be base64") from None
    if base64.b64encode(blob).decode() != encoded:
        raise ValueError("the key data must be canonical base64")
    if _blob_type(blob) != kind.encode():
        raise ValueError(f"the key data is not an {kind} key")
    try:
        key = load_ssh_public_key(value.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"the key data does not parse as an {kind} key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_MINIMUM_BITS:
        raise ValueError(f"an RSA host key must have at least {RSA_MINIMUM_BITS} bits")
    return value
