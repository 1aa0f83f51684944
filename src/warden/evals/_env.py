"""Environments: the systems a workflow's tools touch, reset to a case's fixtures before
it runs and snapshotted after it, so the scorers can diff what the agent changed.

An environment is anything with the three methods of ``Environment``. Two are ready:
``SQLiteEnvironment`` (a fresh SQLite file per case, filled from the fixtures, table ->
rows, with tools that always reach the current case's database) and ``MemoryEnvironment``
(collections of objects by id in memory, e.g. a JSON database).
"""

from __future__ import annotations

import copy
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from warden.errors import UsageError

#: collection (table) -> object id -> the object's fields
State = Mapping[str, Mapping[str, Mapping[str, Any]]]
#: what ``Environment.tools`` returns: the tool functions, as ``Gateway`` takes them
Tools = Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]]


@runtime_checkable
class Environment(Protocol):
    """The state a case's tools act on.

    ``reset`` puts the state back to ``fixtures`` (a fresh copy: nothing of an earlier
    case survives); ``snapshot`` returns it as collections of objects by id; ``tools`` the
    tool functions bound to it. The runner calls ``tools()`` once per case after
    ``reset``: an environment whose tools reach the current state through it (as
    ``SQLiteEnvironment``'s do) may return the same functions every time.
    """

    def reset(self, fixtures: Mapping[str, Any]) -> None: ...

    def snapshot(self) -> State: ...

    def tools(self) -> Tools: ...


@dataclass(frozen=True)
class Updated:
    id: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    @property
    def fields(self) -> frozenset[str]:
        keys = set(self.before) | set(self.after)
        return frozenset(k for k in keys if self.before.get(k) != self.after.get(k))


@dataclass(frozen=True)
class CollectionDiff:
    inserted: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    updated: dict[str, Updated] = field(default_factory=dict)
    deleted: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)


def diff_states(before: State, after: State) -> dict[str, CollectionDiff]:
    """What changed from ``before`` to ``after``, by collection (unchanged ones left out)."""
    out: dict[str, CollectionDiff] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        diff = CollectionDiff(
            inserted={k: new[k] for k in new if k not in old},
            updated={k: Updated(k, old[k], new[k]) for k in new if k in old and old[k] != new[k]},
            deleted={k: old[k] for k in old if k not in new},
        )
        if diff:
            out[name] = diff
    return out


def scratch_dir(prefix: str) -> Path:
    """A private temporary directory, in memory (``/dev/shm``) where there is one: the
    per-case databases are thrown away, so their fsyncs need not reach a disk."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


class SQLiteEnvironment:
    """A SQLite database per case: ``schema`` (SQL statements) then the fixtures' rows.

    ``tools`` builds the tool functions once, given this environment; they reach the
    current case's database through ``env.engine`` (or ``env.connect()``), so they need
    not be rebuilt per case. Each case gets a new file in a private temporary directory
    (in memory where ``/dev/shm`` exists), removed by ``close``.
    """

    def __init__(
        self,
        schema: str,
        tools: Callable[[SQLiteEnvironment], Tools],
        *,
        directory: str | Path | None = None,
    ) -> None:
        self._schema = [s for s in schema.split(";") if s.strip()]
        self._make_tools = tools
        self._tools: Tools | None = None
        self._owned = directory is None
        self._dir = Path(directory) if directory is not None else scratch_dir("warden-eval-env-")
        self._dir.mkdir(parents=True, exist_ok=True)
        self._engine: Engine | None = None
        self._path: Path | None = None
        self._template: Path | None = None
        self._keys: dict[str, list[str]] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise UsageError("the environment has not been reset to a case's fixtures yet")
        return self._engine

    @property
    def path(self) -> Path:
        if self._path is None:
            raise UsageError("the environment has not been reset to a case's fixtures yet")
        return self._path

    def _empty(self) -> Path:
        """A database holding the schema only, made once and copied per case."""
        if self._template is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            template = self._dir / "schema.db"
            with sqlite3.connect(template) as conn:
                for stmt in self._schema:
                    conn.execute(stmt)
            conn.close()
            self._template = template
        return self._template

    def reset(self, fixtures: Mapping[str, Any]) -> None:
        self._drop()
        path = self._dir / f"case-{uuid.uuid4().hex[:12]}.db"
        shutil.copyfile(self._empty(), path)
        conn = sqlite3.connect(path)
        try:
            for table, rows in fixtures.items():
                if not isinstance(rows, list):
                    raise UsageError(f"fixtures.{table}: a list of rows (mappings)")
                for row in rows:
                    if not isinstance(row, Mapping) or not row:
                        raise UsageError(f"fixtures.{table}: each row is a mapping of columns")
                    columns = ", ".join(f'"{c}"' for c in row)
                    marks = ", ".join("?" for _ in row)
                    conn.execute(
                        f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', list(row.values())
                    )
            conn.commit()
        except sqlite3.Error as exc:
            raise UsageError(f"fixtures do not fit the schema: {exc}") from exc
        finally:
            conn.close()
        self._path = path
        # NullPool: every connection is opened and closed with its use, so the file can
        # be removed at the next reset and no connection crosses threads.
        self._engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    def connect(self) -> sqlite3.Connection:
        """A plain ``sqlite3`` connection to the current case's database."""
        return sqlite3.connect(self.path)

    def tools(self) -> Tools:
        if self._tools is None:
            self._tools = self._make_tools(self)
        return self._tools

    def _primary_keys(self, conn: sqlite3.Connection, table: str) -> list[str]:
        if table not in self._keys:
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
            self._keys[table] = keys
        return self._keys[table]

    def snapshot(self) -> State:
        """Every table's rows by primary key (joined with ``|`` when composite; by rowid
        when the table has none)."""
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        try:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            state: dict[str, dict[str, dict[str, Any]]] = {}
            for table in tables:
                keys = self._primary_keys(conn, table)
                rows: dict[str, dict[str, Any]] = {}
                query = f'SELECT rowid AS "__rowid", * FROM "{table}"'
                for row in conn.execute(query):
                    data = {k: row[k] for k in row.keys() if k != "__rowid"}
                    ident = "|".join(str(data[k]) for k in keys) if keys else str(row["__rowid"])
                    rows[ident] = data
                state[table] = rows
            return state
        finally:
            conn.close()

    def _drop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._engine = self._path = None

    def close(self) -> None:
        self._drop()
        if self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._template = None


class MemoryEnvironment:
    """State held in memory as collections of objects by id (a JSON database such as
    τ²-bench's ``db.json``: ``{"users": {"u1": {...}}, "orders": {...}}``).

    ``reset`` deep-copies the fixtures into ``env.data``; the tools, built once by
    ``tools(env)``, read and change ``env.data`` (the current case's copy); ``snapshot``
    is a deep copy of it. Collections must map ids to objects (mappings)."""

    def __init__(self, tools: Callable[[MemoryEnvironment], Tools]) -> None:
        self._make_tools = tools
        self._tools: Tools | None = None
        self.data: dict[str, Any] = {}

    def reset(self, fixtures: Mapping[str, Any]) -> None:
        for name, objects in fixtures.items():
            if not isinstance(objects, Mapping):
                raise UsageError(f"fixtures.{name}: a mapping of id -> object")
        self.data = copy.deepcopy(dict(fixtures))

    def snapshot(self) -> State:
        return {
            name: {
                str(k): dict(v) if isinstance(v, Mapping) else {"value": v}
                for k, v in objects.items()
            }
            for name, objects in copy.deepcopy(self.data).items()
            if isinstance(objects, Mapping)
        }

    def tools(self) -> Tools:
        if self._tools is None:
            self._tools = self._make_tools(self)
        return self._tools


def close_environment(env: Environment) -> None:
    """``env.close()`` when it has one (the protocol does not require it)."""
    close = getattr(env, "close", None)
    if callable(close):
        close()


def merged_fixtures(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Fixtures of several layers (the suite's, then a case's): lists are concatenated,
    mappings merged, other values replaced."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            old = out.get(key)
            if isinstance(old, list) and isinstance(value, list):
                out[key] = [*old, *value]
            elif isinstance(old, Mapping) and isinstance(value, Mapping):
                out[key] = {**old, **value}
            else:
                out[key] = value
    return out


def tool_names(tools: Tools) -> Iterable[str]:
    if isinstance(tools, Mapping):
        return list(tools)
    return [getattr(t, "__name__", repr(t)) for t in tools]
