"""HTTP basic auth against bcrypt hashes, checked as the Prometheus exporter-toolkit checks them.

bcrypt is slow on purpose (~60 ms at cost 10 here, several times that on a Pi), so a verified answer is
cached by (user, hash, password) digest: a scrape every 15 s costs one check, not one per scrape. Checks
that miss the cache run one at a time, so a client guessing passwords takes one core at most; an unknown
user is checked against a dummy hash so that the answer takes as long as for a known one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import OrderedDict
from typing import Mapping

# A cost-10 hash of a password nobody sends (bcrypt.hashpw(b"edge-infer-dummy", bcrypt.gensalt(10))).
_DUMMY_HASH = b"$2b$10$a4P.vObCdQAbQnoRcJjicOVbhfDF1jNLTS1mkuO7GgH3.4bTlUyQq"
CACHE_SIZE = 100  # the toolkit's; a handful of scrapers each with one password needs far fewer


def credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header; None if absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class BasicAuth:
    """``check(users, header)``: whether the header names a user of ``users`` with the right password."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Only digests are kept: the cache never holds a password that a memory dump could show.
        self._cache: OrderedDict[bytes, bool] = OrderedDict()

    def check(self, users: Mapping[str, bytes], header: str | None) -> bool:
        given = credentials(header)
        if given is None:
            return False
        user, password = given
        known = user in users
        hashed = users.get(user, _DUMMY_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        with self._lock:
            ok = self._cache.get(key)
            if ok is None:
                import bcrypt  # only a config with basic_auth_users pays for the import

                # checkpw compares in constant time; a hash of another cost or variant is still just a hash.
                ok = bcrypt.checkpw(password.encode(), hashed) and known
                self._cache[key] = ok
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        return ok
