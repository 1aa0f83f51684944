"""The vault: per-tenant keys, raw values kept encrypted, every read recorded, shredding.

Each tenant has one secret (32 random bytes) in ``vault_keys``, wrapped (AES-GCM) by the
server's master key, which never enters the store (``master_key()``: ``WARDEN_VAULT_KEY``,
else the file ``WARDEN_VAULT_KEY_FILE``, else ``.warden/vault.key`` created on first use).
Two keys are derived from the tenant's secret: the token key (HMAC-SHA256 of PII tokens,
``telemetry._redact``) and the sealing key (AES-256-GCM).

- ``seal`` / ``unseal``: what Warden must read back raw itself (an approval's arguments,
  to execute them once approved; a run's state; a replayed result) is stored sealed, with
  the tenant as associated data (a sealed value moved to another tenant does not open).
- ``keep`` / ``reveal``: where the spec keeps raw values (``pii.vault: true``), each token's
  raw value sits sealed in ``vault_values``; ``reveal`` gives it back to an approver or an
  auditor and writes a ``vault_reads`` row (who, in which role, why) in the same
  transaction.
- ``shred``: deletes the tenant's wrapped secret. Every sealed value of the tenant becomes
  unreadable and its tokens unlinkable (nothing can recompute them), while the ledger,
  which holds only tokens, still verifies. The tenant's next event makes a new secret
  (a new generation): tokens made after a shred differ from those before.

Keys are cached per process for ``KEY_TTL_S``: a shred done by another process is seen
here within that time (this process's own shreds at once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, func, insert, select, update

from warden.errors import UsageError, WardenError
from warden.store import Store
from warden.store._ops import insert_if_absent
from warden.store._tables import vault_keys, vault_reads, vault_values

#: prefix of a sealed value: ``vault:1:<generation>:<base64url(nonce | ciphertext)>``
SEALED_PREFIX: Final = "vault:1:"
KEY_TTL_S: Final = 30.0
DEFAULT_KEY_FILE: Final = Path(".warden") / "vault.key"


class VaultError(WardenError):
    """A sealed value cannot be opened: its tenant's key was shredded, or the master key
    is not the one it was sealed under."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_master(text: str, where: str) -> bytes:
    try:
        key = _unb64(text.strip())
    except (binascii.Error, ValueError):
        raise UsageError(f"{where}: not base64 (expected 32 random bytes, base64url)") from None
    if len(key) != 32:
        raise UsageError(f"{where}: {len(key)} bytes, expected 32 (base64url of 32 random bytes)")
    return key


def master_key(env: dict[str, str] | None = None) -> bytes:
    """The server's master key: ``WARDEN_VAULT_KEY`` (base64url of 32 bytes), else the
    file named by ``WARDEN_VAULT_KEY_FILE``, else ``.warden/vault.key`` (created, mode
    0600, when missing: the embedded default, like the SQLite store beside it)."""
    env = dict(os.environ) if env is None else env
    if env.get("WARDEN_VAULT_KEY"):
        return _parse_master(env["WARDEN_VAULT_KEY"], "WARDEN_VAULT_KEY")
    path = Path(env.get("WARDEN_VAULT_KEY_FILE") or DEFAULT_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(_b64(secrets.token_bytes(32)) + "\n")
    return _parse_master(path.read_text(), str(path))


def new_master_key() -> str:
    """A fresh master key, as ``WARDEN_VAULT_KEY`` takes it."""
    return _b64(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class _TenantKey:
    generation: int
    token_key: bytes
    aead: AESGCM
    loaded_at: float


@dataclass(frozen=True, slots=True)
class VaultRead:
    tenant: str
    ref: str
    reader: str
    role: str
    purpose: str
    at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


class Vault:
    """Tenant keys and sealed values in ``store``, under ``master`` (32 bytes)."""

    def __init__(
        self,
        store: Store,
        master: bytes | None = None,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        master = master if master is not None else master_key()
        self._master = AESGCM(master)
        #: names the master key beside each wrapped key: a wrong master key is an error
        #: that says so, not a failed decryption
        self._master_id = hashlib.sha256(master).hexdigest()[:16]
        self._clock = clock
        self._keys: dict[str, _TenantKey] = {}
        self._old: dict[tuple[str, int], AESGCM | None] = {}
        self._lock = threading.Lock()
        #: called with a tenant whose key changed (shredded here): caches of tokens drop it
        self.on_shred: list[Callable[[str], None]] = []

    # -- keys -------------------------------------------------------------------------

    def _derive(self, tenant: str, generation: int, secret: bytes) -> _TenantKey:
        token_key = hmac.new(secret, b"warden pii token key", hashlib.sha256).digest()
        seal_key = hmac.new(secret, b"warden vault sealing key", hashlib.sha256).digest()
        return _TenantKey(generation, token_key, AESGCM(seal_key), time.monotonic())

    def _unwrap(self, tenant: str, generation: int, key_id: str, wrapped: str) -> bytes:
        if key_id != self._master_id:
            raise VaultError(
                f"tenant {tenant!r}: its vault key is wrapped by another master key "
                f"({key_id}, this server has {self._master_id}): set WARDEN_VAULT_KEY"
            )
        blob = _unb64(wrapped)
        try:
            return self._master.decrypt(blob[:12], blob[12:], f"{tenant}\x00{generation}".encode())
        except InvalidTag:
            raise VaultError(f"tenant {tenant!r}: its vault key does not unwrap") from None

    def _active(self, conn: Connection, tenant: str) -> Any:
        return conn.execute(
            select(vault_keys.c.generation, vault_keys.c.key_id, vault_keys.c.wrapped)
            .where(vault_keys.c.tenant == tenant)
            .order_by(vault_keys.c.generation.desc())
            .limit(1)
        ).first()

    def _load(self, tenant: str) -> _TenantKey:
        with self._store.read() as conn:
            row = self._active(conn, tenant)
        if row is not None and row.wrapped is not None:
            secret = self._unwrap(tenant, row.generation, row.key_id, row.wrapped)
            return self._derive(tenant, row.generation, secret)
        # no key yet, or every generation shredded: make the next one
        generation = 1 if row is None else row.generation + 1
        secret = secrets.token_bytes(32)
        nonce = secrets.token_bytes(12)
        wrapped = self._master.encrypt(nonce, secret, f"{tenant}\x00{generation}".encode())
        with self._store.write() as conn:
            won = insert_if_absent(
                conn,
                vault_keys,
                {
                    "tenant": tenant,
                    "generation": generation,
                    "key_id": self._master_id,
                    "wrapped": _b64(nonce + wrapped),
                    "created_at": self._clock(),
                },
            )
        if not won:  # another process made this generation first: use theirs
            return self._load(tenant)
        return self._derive(tenant, generation, secret)

    def _key(self, tenant: str) -> _TenantKey:
        key = self._keys.get(tenant)
        if key is not None and time.monotonic() - key.loaded_at < KEY_TTL_S:
            return key
        with self._lock:
            fresh = self._load(tenant)
            if key is not None and fresh.generation != key.generation:
                for hook in self.on_shred:
                    hook(tenant)
            self._keys[tenant] = fresh
            return fresh

    def token_key(self, tenant: str) -> bytes:
        """The HMAC key of ``tenant``'s PII tokens (made on first use)."""
        return self._key(tenant).token_key

    def _aead(self, tenant: str, generation: int) -> AESGCM:
        key = self._key(tenant)
        if key.generation == generation:
            return key.aead
        cached = self._old.get((tenant, generation), False)
        if cached is False:
            with self._store.read() as conn:
                row = conn.execute(
                    select(vault_keys.c.key_id, vault_keys.c.wrapped).where(
                        vault_keys.c.tenant == tenant, vault_keys.c.generation == generation
                    )
                ).first()
            if row is None or row.wrapped is None:
                cached = None
            else:
                secret = self._unwrap(tenant, generation, row.key_id, row.wrapped)
                cached = self._derive(tenant, generation, secret).aead
            self._old[(tenant, generation)] = cached
        if cached is None:
            raise VaultError(f"tenant {tenant!r}: key generation {generation} was shredded")
        assert isinstance(cached, AESGCM)
        return cached

    # -- sealing ----------------------------------------------------------------------

    def seal(self, tenant: str, text: str) -> str:
        key = self._key(tenant)
        nonce = secrets.token_bytes(12)
        blob = key.aead.encrypt(nonce, text.encode(), tenant.encode())
        return f"{SEALED_PREFIX}{key.generation}:{_b64(nonce + blob)}"

    def unseal(self, tenant: str, text: str) -> str:
        """The text ``seal`` was given; text that is not sealed is returned as it is
        (rows written before sealing)."""
        if not text.startswith(SEALED_PREFIX):
            return text
        generation_text, _, body = text[len(SEALED_PREFIX) :].partition(":")
        blob = _unb64(body)
        aead = self._aead(tenant, int(generation_text))
        try:
            return aead.decrypt(blob[:12], blob[12:], tenant.encode()).decode()
        except InvalidTag:
            raise VaultError(f"a sealed value of tenant {tenant!r} does not open") from None

    # -- kept raw values --------------------------------------------------------------

    def keep(self, tenant: str, token: str, raw: str, kind: str) -> None:
        """Keep ``raw`` sealed under ``token`` (once: the first writer wins), now."""
        op = self.keeping(tenant, token, raw, kind)
        with self._store.write() as conn:
            op(conn)

    def keeping(
        self, tenant: str, token: str, raw: str, kind: str
    ) -> Callable[[Connection], None]:
        """``keep`` as a write to run in a transaction of the caller's choosing (the
        ledger's next batch: no store round trip on the governed call's path). Sealed
        now, while the key is at hand."""
        row = {
            "tenant": tenant,
            "token": token,
            "kind": kind,
            "sealed": self.seal(tenant, raw),
            "created_at": self._clock(),
        }

        def write(conn: Connection) -> None:
            insert_if_absent(conn, vault_values, row)

        return write

    def record_read(
        self, conn: Connection, tenant: str, ref: str, *, reader: str, role: str, purpose: str
    ) -> None:
        conn.execute(
            insert(vault_reads).values(
                tenant=tenant, ref=ref, reader=reader, role=role, purpose=purpose, at=self._clock()
            )
        )

    def reveal(
        self, tenant: str, token: str, *, reader: str, role: str, purpose: str
    ) -> str | None:
        """The raw value of ``token`` (None: not kept), the read recorded. ``VaultError``
        when the tenant's key was shredded."""
        with self._store.write() as conn:
            sealed = conn.execute(
                select(vault_values.c.sealed).where(
                    vault_values.c.tenant == tenant, vault_values.c.token == token
                )
            ).scalar_one_or_none()
            if sealed is None:
                return None
            raw = self.unseal(tenant, sealed)
            self.record_read(conn, tenant, token, reader=reader, role=role, purpose=purpose)
        return raw

    def reads(self, tenant: str | None = None, *, limit: int = 200) -> list[VaultRead]:
        query = select(vault_reads).order_by(vault_reads.c.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(vault_reads.c.tenant == tenant)
        with self._store.read() as conn:
            return [
                VaultRead(r.tenant, r.ref, r.reader, r.role, r.purpose, r.at)
                for r in conn.execute(query)
            ]

    # -- shredding --------------------------------------------------------------------

    def shred(self, tenant: str, *, by: str) -> dict[str, Any]:
        """Destroy every key generation of ``tenant``: its sealed values and kept raw
        values can no longer be opened, by anyone. Returns what was destroyed."""
        with self._store.write() as conn:
            generations = conn.execute(
                select(func.count())
                .select_from(vault_keys)
                .where(vault_keys.c.tenant == tenant, vault_keys.c.wrapped.is_not(None))
            ).scalar_one()
            conn.execute(
                update(vault_keys)
                .where(vault_keys.c.tenant == tenant, vault_keys.c.wrapped.is_not(None))
                .values(wrapped=None, shredded_at=self._clock(), shredded_by=by)
            )
            # the sealed raw values are unreadable now; their rows only say a token
            # once had a value
            values = conn.execute(delete(vault_values).where(vault_values.c.tenant == tenant))
        with self._lock:
            self._keys.pop(tenant, None)
            for cached in [k for k in self._old if k[0] == tenant]:
                self._old[cached] = None
        for hook in self.on_shred:
            hook(tenant)
        return {"tenant": tenant, "generations": int(generations), "values": values.rowcount}


__all__ = [
    "DEFAULT_KEY_FILE",
    "KEY_TTL_S",
    "SEALED_PREFIX",
    "Vault",
    "VaultError",
    "VaultRead",
    "master_key",
    "new_master_key",
]
