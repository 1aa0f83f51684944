"""Resolving secret references (``env:``, ``file:``, ``hmac:``) into credentials for one call.

Specs and configs name credentials by reference, never by value. The gateway mints a
``Secret`` right before a call and forgets it after: static credentials (``env:``,
``file:``) get a validity window no longer than an hour, and ``hmac:`` references derive a
fresh signed token per call, so a credential captured from one call is of little use later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from warden.secrets._errors import SecretError
from warden.secrets._types import Secret

MAX_TTL = timedelta(hours=1)
SCHEMES = ("env", "file", "hmac")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _b64url(data: bytes) -> str:
    # Unpadded, as in JWTs: the token travels in headers and URLs.
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(master: str, payload: bytes) -> bytes:
    return hmac.new(master.encode("utf-8"), payload, hashlib.sha256).digest()


def parse_ref(ref: str) -> tuple[str, str]:
    """``(scheme, name)`` of a reference; ``SecretError`` if it is not one.

    The message does not repeat a reference without a known scheme: the commonest way to get
    one wrong is to paste the secret itself where its reference belongs.
    """
    scheme, sep, name = ref.partition(":")
    if not sep or scheme not in SCHEMES:
        hint = f"unknown scheme {scheme[:20]!r}" if sep else "no scheme"
        raise SecretError(
            f"not a secret reference ({hint}): write env:NAME, file:NAME or hmac:NAME and keep "
            "the value itself in that environment variable or in the secrets file"
        )
    if not name:
        raise SecretError(f"secret reference {ref!r} has no name: write {scheme}:NAME")
    return scheme, name


@dataclass(frozen=True)
class _FileCache:
    mtime_ns: int
    size: int
    entries: dict[str, str]


class SecretResolver:
    """Mints ``Secret``s from references.

    - ``env:NAME``: environment variable NAME (``environ`` defaults to ``os.environ``).
    - ``file:NAME``: key NAME of ``secrets_file``, a YAML or JSON mapping of name to string
      that only its owner may read (mode 600).
    - ``hmac:NAME``: a token signed with master secret NAME (from the environment, else from
      the file) that expires with the ``Secret``; see ``verify_minted``.
    """

    def __init__(
        self,
        secrets_file: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.secrets_file = secrets_file
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._clock = clock
        self._cache: _FileCache | None = None

    def __repr__(self) -> str:
        return f"SecretResolver(secrets_file={self.secrets_file!r})"

    def mint(self, ref: str, *, ttl: timedelta = MAX_TTL) -> Secret:
        """The credential ``ref`` names, valid for ``ttl`` (at most one hour) from now."""
        scheme, name = parse_ref(ref)  # first: only a valid reference is safe to repeat
        if ttl <= timedelta(0):
            raise SecretError(f"secret {ref!r}: ttl must be positive, got {ttl}")
        if ttl > MAX_TTL:
            raise SecretError(
                f"secret {ref!r}: ttl {ttl} exceeds the 1 hour cap; mint a new secret per call"
            )
        now = self._clock()
        if now.tzinfo is None:
            raise SecretError("the resolver's clock returned a naive datetime; use UTC")
        if scheme == "env":
            return Secret(ref, self._from_env(ref, name), now + ttl)
        if scheme == "file":
            return Secret(ref, self._from_file(ref, name), now + ttl)
        return self._mint_hmac(ref, name, now, ttl)

    # -- schemes --------------------------------------------------------------------------

    def _from_env(self, ref: str, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            raise SecretError(
                f"secret {ref!r}: environment variable {name} is not set; set {name} to the "
                "credential"
            )
        if not value:
            raise SecretError(
                f"secret {ref!r}: environment variable {name} is empty; set {name} to the "
                "credential"
            )
        return value

    def _from_file(self, ref: str, name: str) -> str:
        if self.secrets_file is None:
            raise SecretError(
                f"secret {ref!r}: no secrets file is configured; pass secrets_file (a YAML or "
                f"JSON mapping with key {name}, mode 600) or use env:{name}"
            )
        entries = self._load_file(self.secrets_file)
        value = entries.get(name)
        if value is None:
            raise SecretError(
                f"secret {ref!r}: key {name} is not in {self.secrets_file}; add '{name}: <value>'"
            )
        if not value:
            raise SecretError(
                f"secret {ref!r}: key {name} in {self.secrets_file} is empty; set it to the "
                "credential"
            )
        return value

    def _mint_hmac(self, ref: str, name: str, now: datetime, ttl: timedelta) -> Secret:
        master = self._environ.get(name)
        if not master and self.secrets_file is not None:
            master = self._load_file(self.secrets_file).get(name)
        if not master:
            where = (
                f"or add key {name} to {self.secrets_file}"
                if self.secrets_file
                else "(or configure a secrets file with that key)"
            )
            raise SecretError(
                f"secret {ref!r}: master secret {name} is not set or empty; set environment "
                f"variable {name} {where}"
            )
        # Whole seconds, rounded down, so the Secret never outlives the token it carries.
        exp = int((now + ttl).timestamp())
        claims = {"sub": name, "exp": exp, "jti": secrets.token_urlsafe(16)}
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode("utf-8")
        token = _b64url(payload) + "." + _b64url(_mac(master, payload))
        return Secret(ref, token, datetime.fromtimestamp(exp, UTC))

    # -- the secrets file -----------------------------------------------------------------

    def _load_file(self, path: Path) -> dict[str, str]:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise SecretError(f"secrets file {path} does not exist") from None
        except OSError as exc:
            raise SecretError(f"cannot read secrets file {path}: {exc.strerror}") from None
        # POSIX permission bits mean nothing on Windows; there the ACLs are the owner's job.
        if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"secrets file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):03o}); run: chmod 600 {path}"
            )
        cache = self._cache
        if cache is not None and (cache.mtime_ns, cache.size) == (st.st_mtime_ns, st.st_size):
            return cache.entries
        entries = _parse_secrets(path)
        # Re-read when the file changes, so a rotated secret is picked up without a restart.
        self._cache = _FileCache(st.st_mtime_ns, st.st_size, entries)
        return entries


def _parse_secrets(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read secrets file {path}: {exc}") from None
    # Parser errors are reported by position only: their usual excerpt of the offending line
    # would print a secret.
    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SecretError(
                f"secrets file {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}"
            ) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SecretError(f"secrets file {path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretError(
            f"secrets file {path} must be a mapping of name to string, found {type(data).__name__}"
        )
    entries: dict[str, str] = {}
    for key, value in data.items():
        if value is None:  # "NAME:" with nothing after it: reported as empty when used
            value = ""
        if not isinstance(key, str):
            raise SecretError(
                f"secrets file {path}: names must be strings, found a {type(key).__name__} "
                "name; quote it"
            )
        if not isinstance(value, str):
            raise SecretError(
                f"secrets file {path}: the value of {key[:60]!r} must be a string, found "
                f"{type(value).__name__}; quote it"
            )
        entries[key] = value
    return entries


def verify_minted(master: str, token: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The claims of a token minted from ``hmac:NAME``, if its signature and expiry hold.

    This is what a backend receiving the token runs, with the same master secret. Raises
    ``SecretError`` for a malformed, tampered or expired token.
    """
    parts = token.split(".")
    if len(parts) != 2:
        raise SecretError("malformed token: expected <payload>.<signature>")
    try:
        payload = _b64url_decode(parts[0])
        signature = _b64url_decode(parts[1])
    except (binascii.Error, ValueError):
        raise SecretError("malformed token: not base64url") from None
    # Signature first: nothing in an unauthenticated payload is looked at.
    if not hmac.compare_digest(signature, _mac(master, payload)):
        raise SecretError("invalid token signature")
    try:
        claims = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SecretError("malformed token: payload is not JSON") from None
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("exp"), int)
        or not isinstance(claims.get("sub"), str)
    ):
        raise SecretError("malformed token: claims must include sub and exp")
    if now is not None and now.tzinfo is None:
        raise SecretError("verify_minted: now must be timezone-aware (UTC)")
    current = (now or _utc_now()).timestamp()
    if current >= claims["exp"]:
        raise SecretError(f"token expired at {datetime.fromtimestamp(claims['exp'], UTC)}")
    return claims
