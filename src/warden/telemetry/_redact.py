"""PII redaction: personal data in what Warden stores or sends becomes keyed tokens.

``PiiRedactor.redact(tenant, payload)`` returns a copy of a JSON-like payload in which

- every value at a declared path (the spec's ``pii.redact``: ``args.to``,
  ``result.customer.email``, ``facts.*.email``; ``*`` is any key, and a list's items sit
  at the list's own path, so ``result.rows.name`` is the name of every row) is replaced
  whole by ``pii:field:<mac>``;
- every value under a key that names a secret (``password``, ``api_key``, ...) by
  ``pii:credential:<mac>``;
- inside every other string, what the detectors find (``warden.telemetry._detect``) by
  ``pii:<kind>:<mac>``.

``<mac>`` is HMAC-SHA256 under the tenant's token key (``Vault.token_key``) of the kind
and the value's normal form (an e-mail address in lower case, a phone or card number as
its digits), truncated to 96 bits: the same value gives the same token within a tenant,
so windows, provenance and joins still compare equal, and nothing links tenants. Rules
decide on the raw values; redaction runs after, where events are handed to the sinks.

Cost: the string leaves of a payload are scanned as one text (joined by NUL, which no
pattern crosses), so a payload with nothing to redact is walked once and returned as it
is (not copied).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from sqlalchemy import Connection

from warden.spec import PiiSpec
from warden.telemetry._detect import KINDS, MIN_SCAN_LEN, PiiKind, find
from warden.telemetry._vault import Vault

TOKEN_PREFIX: Final = "pii:"
#: hex characters of the HMAC kept in a token (96 bits: no collision in any one tenant)
TOKEN_HEX: Final = 24
#: keys whose value is a secret whatever it looks like (compared in lower case)
SECRET_KEYS: Final = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "authorization",
        "private_key",
    }
)
#: the spellings of ``SECRET_KEYS`` matched (exact lookups: no ``lower()`` per key)
_SECRET_FORMS: Final = frozenset(
    form
    for key in SECRET_KEYS
    for base in (key, key.replace("_", "-"))
    for form in (base, base.upper(), base.capitalize(), base.title())
)
_CONTAINERS: Final = frozenset({dict, list, tuple})
_SCALARS: Final = frozenset({int, float, bool, type(None)})
#: top-level fields of an event that Warden writes itself: ids, hashes, enum values and
#: names from the spec; never scanned (their values are never PII)
STRUCTURAL: Final = frozenset(
    {
        "action_id",
        "approval_id",
        "idempotency_key",
        "policy",
        "tool",
        "effect",
        "kind",
        "decision",
        "role",
        "sla_class",
        "from_role",
        "to_role",
        "workflow",
        "version",
        "spec_fingerprint",
        "policy_fingerprint",
        "tier",
        "task_type",
        "outcome",
        "settled_as",
        "deadline",
        "model",
        "priced_by",
        "cost_usd",
        "saved_usd",
    }
)
_STRUCTURAL = STRUCTURAL
#: kinds whose raw value is never kept: secrets, and window items (already hashes)
_NOT_KEPT: Final = frozenset({"credential", "item"})
_CLEAN_MAX: Final = 4_096
_CLEAN_MAX_LEN: Final = 512
_CACHE_MAX: Final = 65_536
_SEP: Final = "\x00"

#: (tenant, token, raw value, kind): called once per new token when raw values are kept
KeepHook = Callable[[str, str, str, str], None]


class _Leaf:
    """Marker: the whole value at this path is PII."""


LEAF: Final = _Leaf()
PathTree = dict[str, Any]


def compile_paths(paths: Iterable[str]) -> PathTree:
    """``["args.to", "facts.*.email"]`` as a tree of keys (``*``: any key)."""
    tree: PathTree = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is LEAF:
                break
            node = child
        else:
            node[parts[-1]] = LEAF
    return tree


def normal_form(kind: str, value: str) -> str:
    """What two spellings of one value share (the token is made of this)."""
    if kind == "email":
        return value.lower()
    if kind in ("phone", "card", "ssn"):
        digits = "".join(c for c in value if c.isdigit())
        return ("+" + digits) if value.lstrip().startswith("+") else digits
    if kind == "iban":
        return value.replace(" ", "").upper()
    if kind in ("ipv4", "ipv6"):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    return value


class PiiRedactor:
    """Tokenizes PII in payloads. ``token_key(tenant)`` gives the tenant's HMAC key;
    ``keep`` (optional) is told each new token with its raw value (the vault).
    Thread-safe: the caches are plain dicts, written whole per entry."""

    def __init__(
        self,
        token_key: Callable[[str], bytes],
        *,
        fields: Sequence[str] = (),
        kinds: Iterable[str] = KINDS,
        keep: KeepHook | None = None,
    ) -> None:
        self._token_key = token_key
        self._tree = compile_paths(fields)
        self._kinds = frozenset(kinds)
        self._all_kinds = self._kinds >= set(KINDS)
        self._keep = keep
        self._tokens: dict[tuple[str, str, str], str] = {}
        #: texts that held no PII (short ones): the same text holds none the next time
        self._clean: set[str] = set()

    # -- tokens -----------------------------------------------------------------------

    def token(self, tenant: str, kind: str, value: str) -> str:
        """The token of ``value`` (already known to be PII of ``kind``) in ``tenant``."""
        cache_key = (tenant, kind, value)
        found = self._tokens.get(cache_key)
        if found is not None:
            return found
        mac = hmac.new(
            self._token_key(tenant), f"{kind}\x00{normal_form(kind, value)}".encode(), hashlib.sha256
        ).hexdigest()[:TOKEN_HEX]
        token = f"{TOKEN_PREFIX}{kind}:{mac}"
        if len(self._tokens) >= _CACHE_MAX:
            self._tokens.clear()
        self._tokens[cache_key] = token
        if self._keep is not None and kind not in _NOT_KEPT:
            self._keep(tenant, token, value, kind)
        return token

    def forget(self, tenant: str) -> None:
        """Drop cached tokens of ``tenant`` (its key changed: it was shredded)."""
        self._tokens = {k: v for k, v in self._tokens.items() if k[0] != tenant}

    def redact_text(self, tenant: str, text: str) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        return self._apply(tenant, text, spans)

    def _spans(self, text: str) -> list[tuple[PiiKind, int, int]]:
        spans = find(text)
        if spans and not self._all_kinds:
            spans = [s for s in spans if s[0] in self._kinds]
        return spans

    def _apply(self, tenant: str, text: str, spans: list[tuple[PiiKind, int, int]]) -> str:
        parts: list[str] = []
        last = 0
        for kind, start, end in spans:
            parts.append(text[last:start])
            parts.append(self.token(tenant, kind, text[start:end]))
            last = end
        parts.append(text[last:])
        return "".join(parts)

    # -- payloads ---------------------------------------------------------------------

    def redact(self, tenant: str, obj: Any) -> Any:
        """A copy of JSON-like ``obj`` with its PII tokenized; ``obj`` itself when it
        holds none. Never mutates ``obj``.

        Of an event payload (a dict), the fields Warden writes itself (ids, hashes, names
        from the spec: ``STRUCTURAL``) are left out of the scan; and a payload whose text
        was seen to hold nothing moments ago is not scanned again (an agent's name, a
        rule's reason: measured, the scan was a quarter of a governed read's cost)."""
        texts: list[str] = []
        marked = self._collect(obj, self._tree, texts, _STRUCTURAL)
        if not texts:
            return self._rebuild(tenant, obj, self._tree, {}, [0], _STRUCTURAL) if marked else obj
        joined = texts[0] if len(texts) == 1 else _SEP.join(texts)
        if joined in self._clean:
            spans = []
        else:
            spans = self._spans(joined)
            if not spans and len(joined) <= _CLEAN_MAX_LEN:
                if len(self._clean) >= _CLEAN_MAX:
                    self._clean.clear()
                self._clean.add(joined)
        if not spans and not marked:
            return obj
        # which leaf (in walk order) each span falls in, as offsets inside that leaf
        by_leaf: dict[int, list[tuple[PiiKind, int, int]]] = {}
        leaf = 0
        leaf_start = 0
        leaf_end = len(texts[0])
        for kind, start, end in spans:
            while start >= leaf_end:
                leaf += 1
                leaf_start = leaf_end + 1
                leaf_end = leaf_start + len(texts[leaf])
            by_leaf.setdefault(leaf, []).append((kind, start - leaf_start, end - leaf_start))
        return self._rebuild(tenant, obj, self._tree, by_leaf, [0], _STRUCTURAL)

    def _collect(
        self,
        obj: Any,
        node: PathTree | None,
        texts: list[str],
        skip: frozenset[str] = frozenset(),
    ) -> bool:
        """Append the scannable strings of ``obj`` in walk order; True if a declared or
        secret-named field is present (the payload then changes even without a hit).
        ``_rebuild`` walks in exactly this order (the i-th string here is its i-th).
        ``skip``: keys of this dict whose string values are not scanned (``STRUCTURAL``,
        at an event's top level)."""
        kind = type(obj)
        if kind is str or (kind not in _CONTAINERS and isinstance(obj, str)):
            if len(obj) >= MIN_SCAN_LEN and not obj.startswith(TOKEN_PREFIX):
                texts.append(obj)
            return False
        marked = False
        if kind is dict:
            for key, value in obj.items():
                child = None
                if node is not None:
                    child = node.get(key) or node.get("*")
                    if child is LEAF:
                        marked = True
                        continue
                vkind = type(value)
                if vkind is str:
                    if key in skip:
                        continue
                    if key in _SECRET_FORMS:
                        marked = True
                    elif len(value) >= MIN_SCAN_LEN and not value.startswith(TOKEN_PREFIX):
                        texts.append(value)
                elif not value and vkind in _CONTAINERS:
                    continue
                elif vkind in _CONTAINERS or vkind not in _SCALARS:
                    if isinstance(value, str) and key in _SECRET_FORMS:
                        marked = True
                    elif self._collect(value, child, texts):
                        marked = True
        elif kind is list or kind is tuple:
            for value in obj:  # a list's items sit at the list's path
                vkind = type(value)
                if vkind is str:
                    if len(value) >= MIN_SCAN_LEN and not value.startswith(TOKEN_PREFIX):
                        texts.append(value)
                elif (vkind in _CONTAINERS or vkind not in _SCALARS) and self._collect(
                    value, node, texts
                ):
                    marked = True
        return marked

    def _rebuild(
        self,
        tenant: str,
        obj: Any,
        node: PathTree | None,
        by_leaf: dict[int, list[tuple[PiiKind, int, int]]],
        counter: list[int],
        skip: frozenset[str] = frozenset(),
    ) -> Any:
        kind = type(obj)
        if kind is str or (kind not in _CONTAINERS and isinstance(obj, str)):
            if len(obj) >= MIN_SCAN_LEN and not obj.startswith(TOKEN_PREFIX):
                index = counter[0]
                counter[0] += 1
                spans = by_leaf.get(index)
                if spans:
                    return self._apply(tenant, obj, spans)
            return obj
        if kind is dict:
            out: dict[Any, Any] = {}
            for key, value in obj.items():
                child = None
                if node is not None:
                    child = node.get(key) or node.get("*")
                    if child is LEAF:
                        out[key] = self._field_token(tenant, value)
                        continue
                vkind = type(value)
                if vkind is str:  # inline: most leaves are strings or scalars
                    if key in skip:
                        out[key] = value
                    elif key in _SECRET_FORMS:
                        secret = value and not value.startswith(TOKEN_PREFIX)
                        out[key] = self.token(tenant, "credential", value) if secret else value
                    elif len(value) >= MIN_SCAN_LEN and not value.startswith(TOKEN_PREFIX):
                        index = counter[0]
                        counter[0] = index + 1
                        spans = by_leaf.get(index)
                        out[key] = self._apply(tenant, value, spans) if spans else value
                    else:
                        out[key] = value
                elif vkind in _SCALARS:
                    out[key] = value
                elif isinstance(value, str) and key in _SECRET_FORMS:
                    secret = value and not value.startswith(TOKEN_PREFIX)
                    out[key] = self.token(tenant, "credential", value) if secret else value
                else:
                    out[key] = self._rebuild(tenant, value, child, by_leaf, counter)
            return out
        if kind is list or kind is tuple:
            items = [
                v if type(v) in _SCALARS else self._rebuild(tenant, v, node, by_leaf, counter)
                for v in obj
            ]
            return tuple(items) if kind is tuple else items
        return obj

    def _field_token(self, tenant: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            if value.startswith(TOKEN_PREFIX):
                return value
            return self.token(tenant, "field", value)
        # numbers, objects: their canonical JSON is the value that is tokenized
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return self.token(tenant, "field", text)


def pii_redactor(
    spec: PiiSpec,
    vault: Vault,
    defer: Callable[[Callable[[Connection], None], Callable[[], None]], None] | None = None,
) -> PiiRedactor | None:
    """The redactor a workflow's ``pii:`` asks for, keyed by ``vault``'s tenant keys.
    ``defer``: where kept raw values are written (``LedgerWriter.defer``: with the
    ledger's next batch, off the call's path); None: at once."""
    if not spec.enabled:
        return None
    keep: KeepHook | None = None
    if spec.vault:
        if defer is None:
            keep = vault.keep
        else:
            hand_over = defer

            def keep(tenant: str, token: str, raw: str, kind: str) -> None:
                hand_over(vault.keeping(tenant, token, raw, kind), _nothing)

    return PiiRedactor(vault.token_key, fields=spec.redact, kinds=spec.detect, keep=keep)


#: the tenant whose key tokenizes what belongs to no tenant: kill switches at global,
#: workflow and tool scope (the ledger files them under this tenant too)
SYSTEM_TENANT: Final = "*"


def redact_record(vault: Vault, tenant: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the PII of its free text (a switch's reason, a settlement's note,
    who did it) tokenized under ``tenant``'s key, every detector on: for records written
    outside ``Services.emit`` (switch changes, settlements), which no workflow's ``pii:``
    governs."""
    redacted: dict[str, Any] = PiiRedactor(vault.token_key).redact(tenant, payload)
    return redacted


def stored_identity(pii: PiiRedactor | None, tenant: str, value: str | None) -> str | None:
    """How an identity (a run's end user, who opened it, an approver) is stored and
    compared in the store: its PII tokenized (an e-mail address is a token, an opaque id
    stays as it is), so one identity is one stored value and equality still holds."""
    if value is None or pii is None or value.startswith(TOKEN_PREFIX):
        return value
    return pii.redact_text(tenant, value)


def _nothing() -> None:
    return None


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


__all__ = [
    "LEAF",
    "SECRET_KEYS",
    "STRUCTURAL",
    "SYSTEM_TENANT",
    "TOKEN_PREFIX",
    "PiiRedactor",
    "compile_paths",
    "is_token",
    "normal_form",
    "pii_redactor",
    "redact_record",
    "stored_identity",
]
