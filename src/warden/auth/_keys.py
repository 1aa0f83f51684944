"""API keys: roles, tenant scope, what each key may act as, hashes only, revocation, expiry.

A key is ``wdn_<key id>_<secret>``. Only SHA-256 of the secret is stored; the full key is
shown once, at creation. Verified keys are cached per process for ``cache_s`` seconds, so
a revocation reaches every replica within that time without a database read per request.
The cache holds at most ``max_cached`` key ids (least recently used go first), and a
token longer than any key Warden issues is refused before any lookup, so a stream of
made-up keys costs neither memory nor queries beyond that bound.

What a key is, beyond its role and tenant, is recorded with it rather than claimed per
request:

- an agent key is bound to one agent of the spec (``agent``) and, optionally, to the
  workflows it may run (``workflows``; empty: any served workflow). It opens runs only as
  that agent and acts only on that agent's runs.
- approver and admin keys carry the approval roles they may decide for
  (``approval_roles``); an approval routed to ``cfo`` needs a key holding ``cfo``.
- a bridge key (a chat or email integration deciding for people) may name the human it
  decides for (``on_behalf_of``); no other key may.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import RowMapping, insert, select, update

from warden.errors import ForbiddenError, NotFoundError, UsageError
from warden.store import Store
from warden.store._tables import api_keys

ALL_TENANTS = "*"

#: Longer than any key Warden issues (``wdn_`` + 16 + ``_`` + 43 characters); anything
#: longer is refused without a lookup.
MAX_TOKEN_CHARS = 128
_KEY_ID = re.compile(r"[0-9a-f]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9_.:@\-]{1,120}")

#: How to bind a key made before keys were bound to agents (migration 0005).
BIND_HINT = (
    "bind it with `warden keys bind KEY_ID --agent NAME` (or create a new agent key with --agent)"
)


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
    agent: str | None = None  # agent keys: the one agent they act as
    workflows: frozenset[str] = frozenset()  # agent keys: the workflows they may run; empty: any
    approval_roles: frozenset[str] = frozenset()
    bridge: bool = False

    @property
    def identity(self) -> str:
        return f"key:{self.name}"

    def can_see(self, tenant: str) -> bool:
        return self.tenant == ALL_TENANTS or self.tenant == tenant

    def owns(self, agent: str, workflow: str) -> bool:
        """Whether this key may act on a run of ``agent`` in ``workflow``: any run for keys
        that are not agent keys, only its own agent's runs for an agent key."""
        if self.role is not Role.AGENT:
            return True
        return self.agent == agent and (not self.workflows or workflow in self.workflows)

    def check_open(self, agent: str, workflow: str) -> None:
        """``ForbiddenError`` unless this key may open a run as ``agent`` in ``workflow``."""
        if self.role is not Role.AGENT:
            return
        if self.agent is None:
            raise ForbiddenError(
                f"agent key {self.key_id} is not bound to an agent, so it cannot open runs; "
                + BIND_HINT
            )
        if agent != self.agent:
            raise ForbiddenError(
                f"this key acts as agent {self.agent!r}; it cannot open a run as {agent!r}"
            )
        if self.workflows and workflow not in self.workflows:
            raise ForbiddenError(
                f"this key may run workflows {', '.join(sorted(self.workflows))}, not {workflow!r}"
            )


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
    agent: str | None = None
    workflows: tuple[str, ...] = ()
    approval_roles: tuple[str, ...] = ()
    bridge: bool = False

    @property
    def active(self) -> bool:
        now = datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def principal(self) -> Principal:
        return Principal(
            self.key_id,
            self.name,
            self.role,
            self.tenant,
            self.agent,
            frozenset(self.workflows),
            frozenset(self.approval_roles),
            self.bridge,
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(token: str) -> tuple[str, str] | None:
    if len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != "wdn" or not _KEY_ID.fullmatch(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


def _names(values: Iterable[str] | None, what: str) -> tuple[str, ...]:
    """Sorted, de-duplicated names; ``UsageError`` for one that is not a plain name."""
    found = sorted({v.strip() for v in values or ()})
    for value in found:
        if not _NAME.fullmatch(value):
            raise UsageError(f"{what} {value!r}: use letters, digits and _ . : @ - (at most 120)")
    return tuple(found)


def _binding(
    role: Role,
    agent: str | None,
    workflows: Iterable[str] | None,
    approval_roles: Iterable[str] | None,
    bridge: bool,
) -> dict[str, object]:
    """The binding columns of a key of ``role``, validated: what a key acts as is fixed at
    creation, so each role takes only the bindings that mean something for it."""
    names = _names(workflows, "workflow")
    roles = _names(approval_roles, "approval role")
    if role is Role.AGENT:
        if agent is None or not agent.strip():
            raise UsageError("an agent key is bound to one agent of the spec: give --agent NAME")
        (agent,) = _names([agent], "agent")
        if roles or bridge:
            raise UsageError("approval roles and --bridge are for approver and admin keys")
    else:
        if agent is not None or names:
            raise UsageError("--agent and --workflow bind agent keys only")
        if (roles or bridge) and role not in (Role.APPROVER, Role.ADMIN):
            raise UsageError("approval roles and --bridge are for approver and admin keys")
    return {
        "agent": agent,
        "workflows": json.dumps(list(names)) if names else None,
        "approval_roles": json.dumps(list(roles)) if roles else None,
        "bridge": bridge,
    }


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
        agent: str | None = None,
        workflows: Iterable[str] | None = None,
        approval_roles: Iterable[str] | None = None,
        bridge: bool = False,
    ) -> tuple[KeyInfo, str]:
        """Create a key; returns its info and the full key, which is never shown again.

        An agent key needs ``agent`` (and may list ``workflows``); approver and admin keys
        may carry ``approval_roles`` and be a ``bridge``."""
        try:
            role = Role(role)
        except ValueError:
            raise UsageError(f"role {role!r}: use admin, approver, agent or auditor") from None
        if not name.strip():
            raise UsageError("a key needs a name")
        if tenant == ALL_TENANTS and role is not Role.ADMIN:
            raise UsageError("only admin keys may span all tenants; give --tenant")
        if not tenant:
            raise UsageError("a key needs a tenant (or '*' for an admin key)")
        binding = _binding(role, agent, workflows, approval_roles, bridge)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32).replace("_", "-")
        now = self._clock()
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
                    expires_at=None if expires_in is None else now + expires_in,
                    revoked_at=None,
                    **binding,
                )
            )
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().one()
        return _info(row), f"wdn_{key_id}_{secret}"

    def get(self, key_id: str) -> KeyInfo:
        with self._store.read() as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
            )
        if row is None:
            raise NotFoundError(f"no key {key_id!r}")
        return _info(row)

    def list(self, *, tenant: str | None = None) -> list[KeyInfo]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self._store.read() as conn:
            return [_info(r) for r in conn.execute(query).mappings()]

    def bind(
        self,
        key_id: str,
        *,
        agent: str | None = None,
        workflows: Iterable[str] | None = None,
        approval_roles: Iterable[str] | None = None,
        bridge: bool | None = None,
    ) -> KeyInfo:
        """Set what an existing key acts as (keys made before migration 0005 have no
        binding). Arguments left as None keep the key's current value."""
        current = self.get(key_id)
        binding = _binding(
            current.role,
            agent if agent is not None else current.agent,
            workflows if workflows is not None else current.workflows,
            approval_roles if approval_roles is not None else current.approval_roles,
            bridge if bridge is not None else current.bridge,
        )
        with self._store.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(**binding))
        self._forget(key_id)
        return self.get(key_id)

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
        self._forget(key_id)
        return _info(row)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    def answers_from_cache(self, token: str) -> bool:
        """Whether ``verify(token)`` can answer from the cache, without a store read (so a
        server may call it on its event loop)."""
        parsed = _parse(token.strip()) if len(token) <= MAX_TOKEN_CHARS + 16 else None
        if parsed is None:
            return True  # refused without a lookup
        with self._lock:
            found = self._cache.get(parsed[0])
        return found is not None and time.monotonic() - found[0] <= self._cache_s

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
        return info.principal()


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


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
        agent=r["agent"],
        workflows=_list(r["workflows"]),
        approval_roles=_list(r["approval_roles"]),
        bridge=bool(r["bridge"]),
    )
