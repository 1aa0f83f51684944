"""API keys: roles, tenant scope, hashes only, revocation, expiry.

A key is ``wdn_<key id>_<secret>``. Only SHA-256 of the secret is stored; the full key is
shown once, at creation. Verified keys are cached per process for ``cache_s`` seconds, so
a revocation reaches every replica within that time without a database read per request.
The cache holds at most ``max_cached`` key ids (least recently used go first), and a
token longer than any key Warden issues is refused before any lookup, so a stream of
made-up keys costs neither memory nor queries beyond that bound.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import RowMapping, insert, select, update

from warden.errors import NotFoundError, UsageError
from warden.store import Store
from warden.store._tables import api_keys

ALL_TENANTS = "*"

#: Longer than any key Warden issues (``wdn_`` + 16 + ``_`` + 43 characters); anything
#: longer is refused without a lookup.
MAX_TOKEN_CHARS = 128
_KEY_ID = re.compile(r"[0-9a-f]{1,32}")


class Role(StrEnum):
    ADMIN = "admin"
    APPROVER = "approver"
    AGENT = "agent"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a verified key."""

    key_id: str
    name: str
    role: Role
    tenant: str  # a tenant, or "*" for an all-tenant admin key

    @property
    def identity(self) -> str:
        return f"key:{self.name}"

    def can_see(self, tenant: str) -> bool:
        return self.tenant == ALL_TENANTS or self.tenant == tenant


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    role: Role
    tenant: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        now = datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(token: str) -> tuple[str, str] | None:
    if len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != "wdn" or not _KEY_ID.fullmatch(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    def __init__(
        self,
        store: Store,
        *,
        cache_s: float = 2.0,
        max_cached: int = 10_000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_cached < 1:
            raise UsageError("max_cached must be at least 1")
        self._store = store
        self._cache_s = cache_s
        self._max_cached = max_cached
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[str, tuple[float, KeyInfo | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def cached(self) -> int:
        """How many key ids this process holds in its cache (at most ``max_cached``)."""
        return len(self._cache)

    def create(
        self,
        *,
        name: str,
        role: Role | str,
        tenant: str,
        created_by: str,
        expires_in: timedelta | None = None,
    ) -> tuple[KeyInfo, str]:
        """Create a key; returns its info and the full key, which is never shown again."""
        role = Role(role)
        if not name.strip():
            raise UsageError("a key needs a name")
        if tenant == ALL_TENANTS and role is not Role.ADMIN:
            raise UsageError("only admin keys may span all tenants; give --tenant")
        if not tenant:
            raise UsageError("a key needs a tenant (or '*' for an admin key)")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32).replace("_", "-")
        now = self._clock()
        info = KeyInfo(
            key_id,
            name,
            role,
            tenant,
            now,
            created_by,
            None if expires_in is None else now + expires_in,
            None,
        )
        with self._store.write() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    name=name,
                    role=role.value,
                    tenant=tenant,
                    secret_hash=_hash(secret),
                    created_at=now,
                    created_by=created_by,
                    expires_at=info.expires_at,
                    revoked_at=None,
                )
            )
        return info, f"wdn_{key_id}_{secret}"

    def list(self, *, tenant: str | None = None) -> list[KeyInfo]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self._store.read() as conn:
            return [_info(r) for r in conn.execute(query).mappings()]

    def revoke(self, key_id: str) -> KeyInfo:
        with self._store.write() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
            )
        if row is None:
            raise NotFoundError(f"no key {key_id!r}")
        if done.rowcount == 0 and row["revoked_at"] is None:
            raise UsageError(f"key {key_id} could not be revoked")
        with self._lock:
            self._cache.pop(key_id, None)
        return _info(row)

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid, active key; None for anything else."""
        if len(token) > MAX_TOKEN_CHARS + 16:  # before even stripping a megabyte
            return None
        parsed = _parse(token.strip())
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None:
                self._cache.move_to_end(key_id)
        if cached is None or now - cached[0] > self._cache_s:
            with self._store.read() as conn:
                row = (
                    conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))
                    .mappings()
                    .first()
                )
            cached = (
                now,
                None if row is None else _info(row),
                None if row is None else row["secret_hash"],
            )
            with self._lock:
                self._cache[key_id] = cached
                self._cache.move_to_end(key_id)
                while len(self._cache) > self._max_cached:
                    self._cache.popitem(last=False)
        _, info, digest = cached
        if info is None or digest is None or not hmac.compare_digest(digest, _hash(secret)):
            return None
        if info.revoked_at is not None or (
            info.expires_at is not None and info.expires_at <= self._clock()
        ):
            return None
        return Principal(info.key_id, info.name, info.role, info.tenant)


def _info(r: RowMapping) -> KeyInfo:
    return KeyInfo(
        key_id=r["key_id"],
        name=r["name"],
        role=Role(r["role"]),
        tenant=r["tenant"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
    )
