"""The retail store's database as an environment: reset to the fixture, change, diff.

The fixture is τ²-bench's ``db.json`` (products, users, orders) as loaded once; a task's
writes go to an overlay of the records they touched, so ``reset()`` is free and the state
diff only looks at touched records. ``snapshot()`` and ``reset()`` are the two methods the
eval framework's ``Environment`` protocol asks for.

Money stays in the JSON numbers of the data set (τ²'s success criterion hashes them), but
every sum is done in ``Decimal`` and rounded to cents before it is stored, so repeated
refunds and gift-card top-ups cannot drift by binary-float error.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

__all__ = ["TABLES", "RetailState", "cents"]

#: the data set's collections, each a mapping from id to record
TABLES = ("products", "users", "orders")

Record = dict[str, Any]


def cents(value: float | Decimal | int) -> Decimal:
    """A JSON money amount as an exact Decimal, rounded to cents."""
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


class RetailState:
    """The store's records: the fixture plus this task's changes."""

    def __init__(self, db: Mapping[str, Mapping[str, Record]]) -> None:
        self._load(db)
        self._tools: list[Any] | None = None

    def _load(self, db: Mapping[str, Mapping[str, Any]]) -> None:
        missing = [t for t in TABLES if t not in db]
        if missing:
            raise ValueError(f"the database lacks {', '.join(missing)}")
        self._source = db
        # Never mutated: the overlay holds a deep copy of every record a write touches.
        self._fixture: dict[str, dict[str, Record]] = {t: dict(db[t]) for t in TABLES}
        self._overlay: dict[str, dict[str, Record]] = {t: {} for t in TABLES}
        self._email_index: dict[str, str] = {}
        self._name_zip_index: dict[tuple[str, str, str], str] = {}
        self._item_index: dict[str, str] = {}
        for user_id, user in self._fixture["users"].items():
            self._email_index[user["email"].lower()] = user_id
            key = (
                user["name"]["first_name"].lower(),
                user["name"]["last_name"].lower(),
                user["address"]["zip"],
            )
            self._name_zip_index[key] = user_id
        for product_id, product in self._fixture["products"].items():
            for item_id in product["variants"]:
                self._item_index[item_id] = product_id

    # -- the Environment protocol -------------------------------------------------------

    def reset(self, fixtures: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Back to the fixture (or to ``fixtures``, when it is another database)."""
        if fixtures is not None and fixtures is not self._source:
            self._load(fixtures)
        self._overlay = {t: {} for t in TABLES}

    def tools(self) -> list[Any]:
        """The store's tools bound to this state (built once: they read it as it is now)."""
        if self._tools is None:
            from examples.tau2_retail.tools import make_tools  # tools import this module

            self._tools = make_tools(self)
        return self._tools

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """The whole database as it is now (records shared: treat as read-only)."""
        return {t: {**self._fixture[t], **self._overlay[t]} for t in TABLES}

    # -- diffing ------------------------------------------------------------------------

    def touched(self) -> dict[str, set[str]]:
        """Ids of the records this task's writes touched, per table."""
        return {t: set(self._overlay[t]) for t in TABLES}

    def changes(self) -> dict[str, dict[str, Record]]:
        """The touched records that differ from the fixture, as they are now."""
        return {
            t: {k: v for k, v in self._overlay[t].items() if v != self._fixture[t].get(k)}
            for t in TABLES
        }

    def diff(self, other: RetailState) -> list[str]:
        """Where two states of the same fixture differ: ``table/id`` per record, sorted."""
        out: list[str] = []
        for t in TABLES:
            for key in sorted(set(self._overlay[t]) | set(other._overlay[t])):
                if self.get(t, key) != other.get(t, key):
                    out.append(f"{t}/{key}")
        return out

    def digest(self) -> str:
        """SHA-256 of the whole database in canonical JSON (τ²'s "db hash" criterion)."""
        h = hashlib.sha256()
        for chunk in json.JSONEncoder(sort_keys=True, separators=(",", ":")).iterencode(
            self.snapshot()
        ):
            h.update(chunk.encode())
        return h.hexdigest()

    # -- records ------------------------------------------------------------------------

    def get(self, table: str, key: str) -> Record | None:
        """A record as it is now (read-only), or None."""
        found = self._overlay[table].get(key)
        return found if found is not None else self._fixture[table].get(key)

    def writable(self, table: str, key: str) -> Record:
        """The record, copied into the overlay on first write; KeyError if unknown."""
        found = self._overlay[table].get(key)
        if found is None:
            found = copy.deepcopy(self._fixture[table][key])
            self._overlay[table][key] = found
        return found

    def ids(self, table: str) -> Iterator[str]:
        yield from self._fixture[table]

    def user_by_email(self, email: str) -> str | None:
        return self._email_index.get(email.strip().lower())

    def user_by_name_zip(self, first_name: str, last_name: str, zip_code: str) -> str | None:
        key = (first_name.strip().lower(), last_name.strip().lower(), zip_code.strip())
        # A user whose address a task changed is found by the new zip, not the old one.
        for user_id, user in self._overlay["users"].items():
            name, zip_now = user["name"], user["address"]["zip"]
            if (name["first_name"].lower(), name["last_name"].lower(), zip_now) == key:
                return user_id
        found = self._name_zip_index.get(key)
        if found is not None and found in self._overlay["users"]:
            return None
        return found

    def product_of_item(self, item_id: str) -> str | None:
        return self._item_index.get(item_id)
