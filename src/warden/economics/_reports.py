"""Cost reports: what runs cost, and what a *successful* run costs, computed from the store.

Read from the ``runs`` table and the ledger's ``usage`` events (one per model call) and
``run_finished`` events (the success check's verdict), never from anything the agent
reports about money. ``warden costs`` and ``GET /v1/costs`` print what ``cost_report``
returns; docs/economics.md ("Cost reports") is the user's description of the figures.

- A run belongs to the window it **started** in: ``[end - since, end)``; the previous
  window is the one of the same length before it.
- A run **succeeded** when it finished and its task type's success check
  (``success_when``, judged from the ledger when it finished) held; when no verdict was
  recorded (no check declared), when it finished with the outcome ``completed`` or
  ``success``. An open run has not succeeded (yet); its spend so far still counts.
- **Cost per successful run** is the total spend of *all* runs of the group divided by the
  group's successful runs: what failed runs spent is part of what success costs.
- Grouped by ``route`` (the declared model that answered a call), a run belongs to every
  route that answered one of its calls, with the spend of those calls only; a run without
  model calls is in the group ``route: null`` at $0. The other dimensions put each run in
  one group.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, select

from warden.errors import InvalidInputError
from warden.store import Store
from warden.store._tables import ledger_events, runs

#: What a report can be grouped by.
DIMENSIONS = ("workflow", "tenant", "route", "task_type")
#: The outcomes that count as success for a run whose finish recorded no check's verdict.
SUCCESS_OUTCOMES = frozenset({"completed", "success"})
#: A cost per run (p50, p95) or per successful run that grew by more than this fraction
#: against the previous window is flagged.
FLAG_ABOVE = Decimal("0.20")
#: The longest window a report covers (two windows are read: this one and the previous).
MAX_WINDOW = timedelta(days=366)
DEFAULT_WINDOW = timedelta(days=7)
#: The unit-cost figures compared with the previous window (total spend and token counts
#: grow with traffic, so they are reported, never flagged).
COMPARED = ("cost_per_run_p50", "cost_per_run_p95", "cost_per_success")

_NANO = Decimal("0.000000001")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_since(text: str) -> timedelta:
    """A window length such as ``7d``, ``24h`` or ``90m``; ``InvalidInputError`` otherwise."""
    from warden.spec._base import _parse_duration

    try:
        since = _parse_duration(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"since: {text!r} is not a duration; give one such as 7d, 24h or 90m"
        ) from None
    if not timedelta(0) < since <= MAX_WINDOW:
        raise InvalidInputError(
            f"since: {text!r} is out of range; give more than 0 and at most {MAX_WINDOW.days}d"
        )
    assert isinstance(since, timedelta)
    return since


def parse_by(text: str | Sequence[str]) -> tuple[str, ...]:
    """Dimensions to group by, comma-separated (``workflow,route``), each once."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    dims = tuple(p.strip() for p in parts if p.strip())
    unknown = [d for d in dims if d not in DIMENSIONS]
    if not dims or unknown:
        found = ", ".join(repr(d) for d in unknown) or "nothing"
        raise InvalidInputError(
            f"by: {found} is not a dimension; give one or more of {', '.join(DIMENSIONS)}, "
            "comma-separated"
        )
    if len(set(dims)) != len(dims):
        raise InvalidInputError(f"by: {','.join(dims)} names a dimension twice")
    return dims


def duration_text(value: timedelta) -> str:
    """``7d``, ``36h``, ``90m``: the largest unit that divides the duration."""
    seconds = value.total_seconds()
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def usd_text(value: Decimal) -> str:
    """Exact USD as text, to the nano-dollar, without trailing zeros (``0.0025``)."""
    text = format(value.quantize(_NANO, rounding=ROUND_HALF_EVEN), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(slots=True)
class _Spend:
    """What a run's model calls (of one route, or all) used."""

    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    #: calls whose usage the upstream did not report (charged their reservation)
    calls_without_usage: int = 0
    #: calls with no cost at all (neither usage nor a reservation known): spend not seen
    unpriced_calls: int = 0
    cache_hits: int = 0
    saved: Decimal = Decimal(0)

    def add(self, other: _Spend) -> None:
        self.cost += other.cost
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.calls += other.calls
        self.calls_without_usage += other.calls_without_usage
        self.unpriced_calls += other.unpriced_calls
        self.cache_hits += other.cache_hits
        self.saved += other.saved


@dataclass(slots=True)
class _Run:
    keys: dict[str, str | None]
    current: bool
    finished: bool
    outcome: str | None
    verdict: bool | None = None
    by_route: dict[str | None, _Spend] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        if not self.finished:
            return False
        if self.verdict is not None:
            return self.verdict
        return self.outcome in SUCCESS_OUTCOMES


@dataclass(frozen=True, slots=True)
class Figures:
    """One group's figures over one window. Money is exact ``Decimal`` USD."""

    runs: int
    #: runs not finished yet: their spend so far counts, they are not successful (yet)
    open_runs: int
    successful: int
    cost_usd: Decimal
    #: nearest-rank percentiles of the cost of each run (a run at $0 counts)
    cost_per_run_p50: Decimal
    cost_per_run_p95: Decimal
    #: ``cost_usd / successful``; None when no run succeeded
    cost_per_success: Decimal | None
    input_tokens: int
    output_tokens: int
    calls: int
    calls_without_usage: int
    unpriced_calls: int
    cache_hits: int
    saved_usd: Decimal

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "open_runs": self.open_runs,
            "successful": self.successful,
            "cost_usd": usd_text(self.cost_usd),
            "cost_per_run_p50": usd_text(self.cost_per_run_p50),
            "cost_per_run_p95": usd_text(self.cost_per_run_p95),
            "cost_per_success": None
            if self.cost_per_success is None
            else usd_text(self.cost_per_success),
            "tokens": self.tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "calls": self.calls,
            "calls_without_usage": self.calls_without_usage,
            "unpriced_calls": self.unpriced_calls,
            "cache_hits": self.cache_hits,
            "saved_usd": usd_text(self.saved_usd),
        }


@dataclass(frozen=True, slots=True)
class CostGroup:
    """One group: its key (dimension -> value), this window, the previous one, and the
    change of each compared figure (percent; None when there is nothing to compare)."""

    key: dict[str, str | None]
    current: Figures
    previous: Figures | None
    change: dict[str, float | None]
    #: the compared figures that grew by more than ``FLAG_ABOVE`` (from $0 to more
    #: included; for ``cost_per_success``: spend and no success, where there were before)
    flagged: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": dict(self.key),
            "current": self.current.to_json(),
            "previous": None if self.previous is None else self.previous.to_json(),
            "change": dict(self.change),
            "flagged": list(self.flagged),
        }


@dataclass(frozen=True, slots=True)
class CostReport:
    since: timedelta
    start: datetime
    end: datetime
    by: tuple[str, ...]
    tenant: str | None
    #: groups with runs in this window, the most expensive first
    groups: tuple[CostGroup, ...]
    #: every run of the window once (also when grouped by route)
    total: CostGroup

    @property
    def previous_start(self) -> datetime:
        return self.start - self.since

    def to_json(self) -> dict[str, Any]:
        return {
            "since": duration_text(self.since),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "previous_start": self.previous_start.isoformat(),
            "by": list(self.by),
            "tenant": self.tenant,
            "groups": [g.to_json() for g in self.groups],
            "total": self.total.to_json(),
        }


def cost_report(
    store: Store,
    *,
    since: timedelta = DEFAULT_WINDOW,
    by: Sequence[str] = ("workflow",),
    tenant: str | None = None,
    end: datetime | None = None,
) -> CostReport:
    """The cost report of the runs started in ``[end - since, end)`` (``end``: now), per
    group of ``by``, compared with the window before; only ``tenant``'s runs when given."""
    dims = parse_by(by)
    if not timedelta(0) < since <= MAX_WINDOW:
        raise InvalidInputError(f"since must be more than 0 and at most {MAX_WINDOW.days} days")
    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        raise InvalidInputError("end must be timezone-aware (UTC)")
    start = end - since
    found = _read(store, start - since, start, end, tenant)

    grouped: dict[tuple[str | None, ...], tuple[list[_Part], list[_Part]]] = {}
    for run in found:
        for route, spend in _parts(run, "route" in dims):
            values = {**run.keys, "route": route}
            key = tuple(values[d] for d in dims)
            windows = grouped.setdefault(key, ([], []))
            windows[0 if run.current else 1].append(_Part(run, spend))
    groups = [
        _group(dict(zip(dims, key, strict=True)), cur, prev)
        for key, (cur, prev) in grouped.items()
        if cur
    ]
    groups.sort(key=lambda g: (-g.current.cost_usd, [v or "" for v in g.key.values()]))
    whole = [_Part(r, _total(r)) for r in found]
    total = _group({}, [p for p in whole if p.run.current], [p for p in whole if not p.run.current])
    return CostReport(since, start, end, dims, tenant, tuple(groups), total)


@dataclass(frozen=True, slots=True)
class _Part:
    """A run in a group, with the spend that group counts of it."""

    run: _Run
    spend: _Spend


def _total(run: _Run) -> _Spend:
    spend = _Spend()
    for part in run.by_route.values():
        spend.add(part)
    return spend


def _parts(run: _Run, by_route: bool) -> Iterable[tuple[str | None, _Spend]]:
    if not by_route:
        return [(None, _total(run))]
    return list(run.by_route.items()) or [(None, _Spend())]


def _window(query: Select[Any], start: datetime, end: datetime, tenant: str | None) -> Select[Any]:
    query = query.where(runs.c.started_at >= start, runs.c.started_at < end)
    return query if tenant is None else query.where(runs.c.tenant == tenant)


def _read(
    store: Store, previous_start: datetime, start: datetime, end: datetime, tenant: str | None
) -> list[_Run]:
    """The runs started in both windows, with their model spend and success verdicts."""
    run_query = _window(
        select(
            runs.c.run_id,
            runs.c.tenant,
            runs.c.workflow,
            runs.c.task_type,
            runs.c.status,
            runs.c.outcome,
            runs.c.started_at,
        ),
        previous_start,
        end,
        tenant,
    )
    # A run's events are on its own stream (pipeline._sinks.LedgerSink), which the store
    # indexes (stream, seq): the join reads only the windows' runs' events.
    event_query = _window(
        select(ledger_events.c.stream, ledger_events.c.type, ledger_events.c.payload)
        .select_from(ledger_events.join(runs, ledger_events.c.stream == runs.c.run_id))
        .where(
            ledger_events.c.type.in_(("usage", "run_finished"))
            # a priced tool's call: its cost is on its executed event
            | (ledger_events.c.type == "executed")
            & ledger_events.c.payload.contains('"cost_usd":', autoescape=True)
        ),
        previous_start,
        end,
        tenant,
    )
    found: dict[str, _Run] = {}
    with store.read() as conn:
        for row in conn.execute(run_query).mappings():
            found[row["run_id"]] = _Run(
                keys={
                    "workflow": row["workflow"],
                    "tenant": row["tenant"],
                    "task_type": row["task_type"],
                },
                current=row["started_at"] >= start,
                finished=row["status"] == "finished",
                outcome=row["outcome"],
            )
        for stream, kind, text in conn.execute(event_query):
            run = found.get(stream)
            if run is None:  # a run opened between the two statements
                continue
            payload = json.loads(text)
            if kind == "run_finished":
                verdict = payload.get("success")
                run.verdict = verdict if isinstance(verdict, bool) else None
                continue
            if kind == "executed":  # a tool's declared cost (ToolSpec.cost)
                run.by_route.setdefault(TOOLS_ROUTE, _Spend()).add(_tool_call(payload))
                continue
            model = payload.get("model")
            route = model if isinstance(model, str) else None
            run.by_route.setdefault(route, _Spend()).add(_call(payload))
    return list(found.values())


#: the ``route`` under which tools' declared costs are reported
TOOLS_ROUTE = "(tools)"


def _tool_call(payload: dict[str, Any]) -> _Spend:
    """A priced tool call's ``executed`` event as spend (no tokens)."""
    cost = _decimal(payload.get("cost_usd"))
    if cost is None:
        return _Spend(calls=1, unpriced_calls=1)
    return _Spend(calls=1, cost=cost)


def _call(payload: dict[str, Any]) -> _Spend:
    """One ``usage`` event as spend. ``cached``/``saved_usd`` are counted when present (the
    response cache records them); a cost that is absent or unreadable is counted as
    ``unpriced_calls``, so spend the report cannot see is shown, not hidden."""
    spend = _Spend(calls=1)
    cost = _decimal(payload.get("cost_usd"))
    if cost is None:
        spend.unpriced_calls = 1
    else:
        spend.cost = cost
    usage = payload.get("usage")
    if isinstance(usage, dict):
        spend.input_tokens = _count(usage.get("input_tokens"))
        spend.output_tokens = _count(usage.get("output_tokens"))
    else:
        spend.calls_without_usage = 1
    if payload.get("cached") is True:
        spend.cache_hits = 1
        spend.saved = _decimal(payload.get("saved_usd")) or Decimal(0)
    return spend


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _percentile(sorted_values: Sequence[Decimal], p: int) -> Decimal:
    """Nearest rank: the smallest value with at least ``p`` % of the values at or below it
    (always one of the values; exact, no interpolation)."""
    rank = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[rank - 1]


def _figures(parts: Sequence[_Part]) -> Figures:
    spend = _Spend()
    for part in parts:
        spend.add(part.spend)
    costs = sorted(part.spend.cost for part in parts)
    successful = sum(1 for part in parts if part.run.succeeded)
    return Figures(
        runs=len(parts),
        open_runs=sum(1 for part in parts if not part.run.finished),
        successful=successful,
        cost_usd=spend.cost,
        cost_per_run_p50=_percentile(costs, 50) if costs else Decimal(0),
        cost_per_run_p95=_percentile(costs, 95) if costs else Decimal(0),
        cost_per_success=spend.cost / successful if successful else None,
        input_tokens=spend.input_tokens,
        output_tokens=spend.output_tokens,
        calls=spend.calls,
        calls_without_usage=spend.calls_without_usage,
        unpriced_calls=spend.unpriced_calls,
        cache_hits=spend.cache_hits,
        saved_usd=spend.saved,
    )


def _group(key: dict[str, str | None], current: list[_Part], previous: list[_Part]) -> CostGroup:
    now = _figures(current)
    before = _figures(previous) if previous else None
    change: dict[str, float | None] = {}
    flagged: list[str] = []
    for name in COMPARED:
        cur: Decimal | None = getattr(now, name)
        old: Decimal | None = None if before is None else getattr(before, name)
        change[name] = None
        if cur is not None and old is not None and old != 0:
            percent = (cur - old) / old * 100
            change[name] = float(percent.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN))
        if cur is not None and old is not None:
            grew = cur > old * (1 + FLAG_ABOVE)  # from $0 to more: grew, by no percentage
        else:
            # Spend and no successful run, where the previous window had some: success
            # got dearer without bound.
            grew = cur is None and old is not None and now.cost_usd > 0
        if grew:
            flagged.append(name)
    return CostGroup(key, now, before, change, tuple(flagged))


__all__ = [
    "COMPARED",
    "DEFAULT_WINDOW",
    "DIMENSIONS",
    "FLAG_ABOVE",
    "MAX_WINDOW",
    "SUCCESS_OUTCOMES",
    "CostGroup",
    "CostReport",
    "Figures",
    "cost_report",
    "duration_text",
    "parse_by",
    "parse_since",
    "usd_text",
]
