"""API keys: where a request carries one, and a constant-time check against every accepted key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

_BEARER_PREFIX = b"bearer "


def api_key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key``; None when neither carries one."""
    bearer = header_key = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization" and value[: len(_BEARER_PREFIX)].lower() == _BEARER_PREFIX:
            bearer = value[len(_BEARER_PREFIX) :].strip()
        elif lowered == b"x-api-key":
            header_key = value.strip()
    return bearer or header_key or None


class KeyChecker:
    """Checks a supplied key against the accepted ones without leaking which, or how close, through timing.

    Both sides are hashed first (SHA-256), so every comparison is between 32-byte digests whatever the
    keys' lengths, and `hmac.compare_digest` runs against every accepted key with no early exit. Several
    keys at once let clients move from an old key to a new one without downtime.
    """

    def __init__(self, accepted: Sequence[str]):
        self._digests = tuple(hashlib.sha256(key.encode("utf-8")).digest() for key in accepted)

    @property
    def enabled(self) -> bool:
        """False when no key is configured (authentication off)."""
        return bool(self._digests)

    def accepts(self, supplied: bytes) -> bool:
        supplied_digest = hashlib.sha256(supplied).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(supplied_digest, digest)
        return matched
