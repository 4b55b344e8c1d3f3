"""API keys (stored hashed) with scopes and collection bindings, and a per-key rate limit.

A key looks like ``kbqa_<id>_<secret>``; only sha256(key) is stored. Scopes: ``query`` (search, ask,
feedback) and ``admin`` (everything, query included).

Keyless mode (local development: every request allowed) holds only while the store has never held a key, and
only for loopback clients, however the app is started. The first key created ends it for good: keys are revoked,
never deleted, so revoking the last one leaves a server that refuses every request (401) instead of one that
opens up. The operator gets back in from the server's own machine: `kbqa keys create --name ops --scope admin`
writes to the same store, and the running server accepts the new key at once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import hmac
import ipaddress
import math
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import limits
import limits.storage
import limits.strategies

from retrieval.filters import canonical, combined, compile_filter

SCOPES = ("query", "admin")
KEYLESS_REFUSAL = ("no API key has been created yet, so this server answers loopback clients only: on the server, "
                   "run `kbqa keys create --name NAME --scope admin` and send the key as 'Authorization: Bearer <key>'")


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8 or ::1 (``localhost`` too, as some servers report it); anything else, or no address, is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class AuthError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True)
class Principal:
    key_id: str | None            # None: local development mode (no keys configured)
    scope: str
    collections: frozenset[str] | None   # None: every collection
    filter: dict | None = None           # a metadata filter AND-ed into every request (retrieval/filters.py)

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or scope == self.scope

    def can_see(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def check_collection(self, collection: str) -> None:
        if not self.can_see(collection):
            raise AuthError(403, f"this API key may not use collection {collection!r}")

    def narrowed(self, requested: dict | None) -> dict | None:
        """The request's filter within this key's slice: AND-ed, so no filter of the caller's can widen it."""
        return combined(self.filter, requested)

    def check_unsliced(self, what: str) -> None:
        """Routes that write documents or change a whole collection (uploads, deletes, distillation, collections,
        customer rules) are not cut to a slice: a key with a filter is refused there (403), so it never changes rows
        outside its slice. Feedback and gaps are cut to it (``KeyStore.sharing_slice``)."""
        if self.filter is not None:
            raise AuthError(403, f"this API key is bound to a filter: {what} needs a key without one")

    @functools.cached_property
    def _keeps(self):   # compiled once per request, not once per document listed
        return compile_filter(self.filter) if self.filter is not None else None

    def sees_document(self, metadata: dict) -> bool:
        return self._keeps is None or self._keeps(metadata)


DEV_PRINCIPAL = Principal(None, "admin", None)


class KeyStore:
    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                         "key_hash TEXT NOT NULL, scope TEXT NOT NULL, collections TEXT, created REAL NOT NULL, "
                         "revoked INTEGER NOT NULL DEFAULT 0)")
        if "filter" not in {r["name"] for r in self._db.execute("PRAGMA table_info(keys)")}:   # added by issue 28
            self._db.execute("ALTER TABLE keys ADD COLUMN filter TEXT")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, scope: str, collections: list[str] | None = None, filter: dict | None = None) -> str:
        """``filter``: the key's slice of its collections' documents (checked here: FilterError when malformed)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if filter is not None:
            compile_filter(filter)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        key = f"kbqa_{key_id}_{secret}"
        with self._lock:
            self._db.execute("INSERT INTO keys (key_id, name, key_hash, scope, collections, created, filter) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key_id, name, hashlib.sha256(key.encode()).hexdigest(), scope,
                              ",".join(collections) if collections else None, time.time(),
                              json.dumps(filter) if filter else None))
        return key

    def revoke(self, key_id: str) -> None:
        with self._lock:
            if self._db.execute("UPDATE keys SET revoked = 1 WHERE key_id = ?", (key_id,)).rowcount == 0:
                raise KeyError(f"no API key {key_id!r}")

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT key_id, name, scope, collections, created, revoked, filter FROM keys"
                                    ).fetchall()
        return [{**dict(r), "revoked": bool(r["revoked"]), "filter": json.loads(r["filter"]) if r["filter"] else None}
                for r in rows]

    def sharing_slice(self, filter: dict) -> list[str]:
        """The ids of every key (revoked ones too: their answers stay theirs) bound to this very filter: one
        tenant's keys, whose answers, feedback and gaps a key of that slice may read."""
        wanted = canonical(filter)
        with self._lock:
            rows = self._db.execute("SELECT key_id, filter FROM keys WHERE filter IS NOT NULL").fetchall()
        return sorted(r["key_id"] for r in rows if canonical(json.loads(r["filter"])) == wanted)

    def ever_keyed(self) -> bool:
        """Has a key ever been created here (revoked ones count)? Once true, it stays true."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None

    def any_active(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM keys WHERE revoked = 0 LIMIT 1").fetchone() is not None

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthError(401, "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'")
        parts = key.split("_")
        with self._lock:
            row = self._db.execute("SELECT * FROM keys WHERE key_id = ? AND revoked = 0",
                                   (parts[1] if len(parts) >= 3 else "",)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], hashlib.sha256(key.encode()).hexdigest()):
            raise AuthError(401, "unknown or revoked API key")
        collections = frozenset(row["collections"].split(",")) if row["collections"] else None
        return Principal(row["key_id"], row["scope"], collections, json.loads(row["filter"]) if row["filter"] else None)


class RateLimiter:
    """``per_minute`` requests in any 60 s per principal (a moving window, the ``limits`` library in memory: one
    process serves, so one memory holds every count); 0 turns it off."""

    def __init__(self, per_minute: int):
        self.item = limits.RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())

    def take(self, who: str) -> None:
        if self.item is None or self._limiter.hit(self.item, who):
            return
        reset = self._limiter.get_window_stats(self.item, who).reset_time
        raise AuthError(429, "rate limit exceeded", retry_after=max(1, math.ceil(reset - time.time())))
