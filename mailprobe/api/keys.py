"""API keys: which key a caller presented, and which configured key it matches.

Keys are compared as digests in constant time and never logged, echoed or handed out. Whether
a request needs a key, and the 401 answer, are the endpoints' business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr
from starlette.requests import Request


def presented_key(request: Request) -> bytes | None:
    """Return the key the caller sent, as bytes: `Authorization: Bearer …`, `X-API-Key`, or
    HTTP Basic's password (any user name), which is how a browser sends it (the dashboard)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        return _basic_password(token.strip())
    if scheme.lower() == "bearer" and token.strip():
        text = token.strip()
    else:
        text = request.headers.get("x-api-key", "").strip()
    # Starlette decodes headers as Latin-1: encoding back gives the bytes that were sent.
    return text.encode("latin-1") if text else None


def _basic_password(token: str) -> bytes | None:
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(b":")[2] or None


class KeyRing:
    """The accepted API keys; they are compared in constant time and never handed out."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        # Digests make every comparison the same length, so timing tells nothing about a key.
        self._digests = [hashlib.sha256(k.get_secret_value().encode()).digest() for k in keys]

    @property
    def required(self) -> bool:
        """Return True when callers must present a key."""
        return bool(self._digests)

    def identify(self, presented: bytes | None) -> str | None:
        """Return the id of the matching key (`key1`, `key2`, … in config order), or None."""
        if presented is None:
            return None
        digest = hashlib.sha256(presented).digest()
        found = None
        for index, known in enumerate(self._digests, start=1):
            # No early exit: every key is compared, matching or not.
            if hmac.compare_digest(digest, known) and found is None:
                found = f"key{index}"
        return found
