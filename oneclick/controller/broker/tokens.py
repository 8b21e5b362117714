"""Bootstrap tokens: one per member per launch, kept only as hashes, compared in constant time.

A token is derived from the controller's token key and the member's uid (HMAC-SHA256), so a
controller that crashed between minting a token and launching the instance derives the same
token again: nothing but the key (a Secret) and the hashes (member status) is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

TOKEN_KEY_BYTES = 32


def new_token_key() -> bytes:
    return secrets.token_bytes(TOKEN_KEY_BYTES)


def token_for(key: bytes, member_uid: str) -> str:
    """The member's bootstrap token: unguessable without the key, the same every time."""
    digest = hmac.new(key, f"oneclick-bootstrap:{member_uid}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    """What the member's status keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)
