"""API keys: where a request carries one, and a constant-time check against every accepted key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

_BEARER_PREFIX = b"bearer "


def credentials_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes | None]:
    """Every credential a request presents, one per ``X-API-Key`` or ``Authorization`` header: its key,
    or None when the header is empty or not ``Bearer <key>`` (such a credential can never pass)."""
    credentials: list[bytes | None] = []
    for name, value in headers:
        lowered, value = name.lower(), value.strip()
        if lowered == b"x-api-key":
            credentials.append(value or None)
        elif lowered == b"authorization":
            is_bearer = value[: len(_BEARER_PREFIX)].lower() == _BEARER_PREFIX
            credentials.append((value[len(_BEARER_PREFIX) :].strip() or None) if is_bearer else None)
    return credentials


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

    def check(self, credentials: Sequence[bytes | None]) -> str | None:
        """None when the request may pass, else why not (for the 401 message).

        Every credential presented must be an accepted key: a wrong key is refused even when a right one
        comes along in the other header, so a mistaken or stolen-and-guessed key never goes unnoticed.
        """
        if not credentials:
            return "This endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key'."
        # Every credential is compared, with no early exit, so timing does not tell which one failed.
        results = [credential is not None and self.accepts(credential) for credential in credentials]
        return None if all(results) else "The API key is not valid."

    def accepts(self, supplied: bytes) -> bool:
        supplied_digest = hashlib.sha256(supplied).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(supplied_digest, digest)
        return matched
