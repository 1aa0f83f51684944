"""Hard budgets, decided in the store: reserve before a call, settle or release after.

The model. A budget (``BudgetSpec``) caps the spend of one *counter*: the budget's name,
scope and period plus the scope's value for the call (the run id, the tenant, ...), e.g.
``daily|tenant|calendar_day|acme``. A counter's usage is its settled spend (rows of
``budget_spend``, per time bucket) plus the reservations of calls in flight (rows of
``budget_holds``). A reservation fits a counter when

    spent (in the period) + reserved (unexpired, in the period) + amount <= limit

in USD and in tokens, each where the budget has a limit.

Atomicity. ``reserve`` reads the usage of every counter of the call and records its holds
in one write transaction, holding a lock on each counter: a transaction-scoped advisory
lock per counter on PostgreSQL (taken in sorted order in one statement, so two calls never
deadlock), the database write lock on SQLite (``BEGIN IMMEDIATE``). So N callers in threads,
processes or replicas see each other's holds: exactly as many fit as the limit pays for,
and a call that does not fit is refused only when the counter has less left than it
needs. All counters of a call are reserved in that one transaction, or none. ``settle``
takes the same locks, moves the hold to spend (the actual amount, below or above the
reservation) and reports the alert thresholds the settle crossed; ``release`` drops the
hold. Nothing is decided from process memory.

Periods. ``run``: one bucket, forever. ``calendar_day|week|month``: the UTC day, ISO week
(Monday 00:00 UTC) or month the call is reserved in; one bucket per period, so a new
period starts at 0. ``rolling_day|week|month`` (24 h, 7 d, 30 d): spend is counted in
buckets of 1/24 of the period (1 h, 7 h, 30 h), and the window is the current bucket plus
the 24 before it. An amount therefore counts for at least the whole period and at most
1/24 of it longer (between 24 and 25 hours for a rolling day): never less than an exact
rolling window would, so never a cent more is allowed. Spend is recorded in the bucket of
its reservation, so a call reserved at 23:59:59 and settled after midnight counts in the
day it started.

Expiry. A hold carries an expiry (``ttl``, default 15 minutes; make it longer than the
call can take, retries included). Past it, the hold stops counting at once — a crashed
caller's money is free again for the next reserve, no sweeper needed — and a later sweep
deletes it. A caller that was only slow can still settle within ``grace`` (24 h) after
the expiry; its spend is recorded and the settle says ``late``.

Overshoot. The worst case is stated in docs/economics.md: a budget's spend exceeds its
limit only when a settle is larger than its reservation (the upstream billed more than
the worst case the reservation was sized for), or when a settle arrives after its
reservation expired and the freed money was reserved again. Both are reported by the
``Settlement`` (``over_reservation``, ``late``).

Money is stored in integer nano-dollars (1e-9 USD). Amounts are rounded up to the next
nano-dollar and limits down, so rounding never lets spend past a limit.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, insert, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

from warden.economics._pricing import ModelPricing, Money, OutputLine
from warden.errors import UsageError
from warden.spec._economics import BudgetPeriod, BudgetScope, BudgetSpec
from warden.store import Store
from warden.store._tables import budget_holds, budget_spend

_NANO = Decimal(1_000_000_000)
_ROLLING_SECONDS = {
    BudgetPeriod.ROLLING_DAY: 86_400,
    BudgetPeriod.ROLLING_WEEK: 7 * 86_400,
    BudgetPeriod.ROLLING_MONTH: 30 * 86_400,
}
#: a rolling window is this many buckets plus the current one
ROLLING_BUCKETS = 24
_SWEEP_EVERY = 64


def _to_nusd(usd: Decimal, rounding: str = ROUND_CEILING) -> int:
    return int((usd * _NANO).to_integral_value(rounding=rounding))


def _usd(nusd: int) -> Money:
    # Exact (a power of ten divides within the context's 28 digits) and shown plainly:
    # 500_000_000 -> 0.5, 0 -> 0.
    return Decimal(nusd) / _NANO


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _epoch_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Amount:
    """What a call reserves or spends: USD and tokens (input plus output)."""

    usd: Money = Decimal(0)
    tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.usd, Decimal) or not self.usd.is_finite() or self.usd < 0:
            raise UsageError(
                f"Amount.usd must be a finite, non-negative Decimal (money is never a float), "
                f"got {self.usd!r}"
            )
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0:
            raise UsageError(f"Amount.tokens must be a non-negative int, got {self.tokens!r}")


@dataclass(frozen=True, slots=True)
class Headroom:
    """What is left to spend; None in a unit that no budget limits."""

    usd: Money | None
    tokens: int | None


@dataclass(frozen=True, slots=True)
class Limit:
    """A budget as the store enforces it (built from a ``BudgetSpec``)."""

    name: str
    scope: BudgetScope
    period: BudgetPeriod
    usd: Money | None = None
    tokens: int | None = None
    alert_at: tuple[Decimal, ...] = ()

    def __post_init__(self) -> None:
        if self.usd is None and self.tokens is None:
            raise UsageError(f"budget {self.name!r} has no limit: give usd, tokens or both")

    @classmethod
    def from_spec(cls, spec: BudgetSpec) -> Limit:
        return cls(spec.name, spec.scope, spec.period, spec.usd, spec.tokens, tuple(spec.alert_at))


@dataclass(frozen=True, slots=True)
class Target:
    """One counter a call charges: a budget and the value of its scope for the call."""

    limit: Limit
    scope_key: str

    @property
    def key(self) -> str:
        """The counter's identity in the store. Budgets of the same name, scope and period
        share it, also across workflows (a tenant's daily cap declared in two workflows
        is one cap); each checks its own limit."""
        lim = self.limit
        return f"{lim.name}|{lim.scope.value}|{lim.period.value}|{self.scope_key}"


def targets_for(
    budgets: Iterable[BudgetSpec | Limit],
    *,
    tenant: str,
    workflow: str,
    agent: str,
    run_id: str,
    end_user: str | None = None,
) -> tuple[Target, ...]:
    """The counters a call of this run charges, one per budget.

    Scope values: ``run``: the run id; ``end_user``: tenant and end user (calls without an
    end user share one counter per tenant — fail closed: they are not unlimited);
    ``agent``: the agent; ``tenant``: the tenant; ``workflow``: the workflow;
    ``global``: one counter.
    """
    values = {
        BudgetScope.RUN: run_id,
        BudgetScope.END_USER: f"{tenant}/{end_user or ''}",
        BudgetScope.AGENT: agent,
        BudgetScope.TENANT: tenant,
        BudgetScope.WORKFLOW: workflow,
        BudgetScope.GLOBAL: "*",
    }
    out = []
    for budget in budgets:
        limit = budget if isinstance(budget, Limit) else Limit.from_spec(budget)
        out.append(Target(limit, values[limit.scope]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A counter's limit and usage in the current period (for reports and refusals)."""

    budget: str
    scope: BudgetScope
    period: BudgetPeriod
    scope_key: str
    #: where the period began (None for ``run``); for a rolling period, the start of the
    #: oldest bucket counted
    since: datetime | None
    limit_usd: Money | None
    spent_usd: Money
    reserved_usd: Money
    left_usd: Money | None
    limit_tokens: int | None
    spent_tokens: int
    reserved_tokens: int
    left_tokens: int | None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money and tokens held for one call until ``settle`` or ``release``."""

    id: str
    targets: tuple[Target, ...]
    amount: Amount
    reserved_at: datetime
    expires_at: datetime
    #: ``reserve_call``: the ``max_tokens`` the call may ask for (what the budgets pay)
    max_output_tokens: int | None = None
    #: ``reserve_call``: the budgets pay for fewer output tokens than the call asked for
    #: (or, asking for none, than the context window leaves): the caller must send
    #: ``max_output_tokens`` and say so
    capped: bool = False


@dataclass(frozen=True, slots=True)
class Exceeded:
    """The call does not fit: ``needed`` is more than ``headroom`` in some budget."""

    needed: Amount
    #: the least left over all the call's budgets, per unit
    headroom: Headroom
    #: the budgets that cannot pay ``needed``, in the order the call listed them
    budgets: tuple[BudgetStatus, ...]

    @property
    def budget(self) -> str:
        """The first budget that refused (its ``on_exhausted`` decides what happens)."""
        return self.budgets[0].budget


@dataclass(frozen=True, slots=True)
class Crossing:
    """A settle took a budget's spend past one of its ``alert_at`` fractions."""

    budget: str
    scope_key: str
    unit: Literal["usd", "tokens"]
    threshold: Decimal
    limit: Money | int
    spent: Money | int


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: str
    actual: Amount
    #: how much ``actual`` exceeded the reservation (zero when within): the only way a
    #: budget is overspent, besides ``late``
    over_reservation: Amount
    #: settled after the reservation had expired (its money may have been reserved again)
    late: bool
    crossed: tuple[Crossing, ...] = ()


@dataclass(frozen=True, slots=True)
class _Window:
    bucket: int  # epoch seconds; 0 for run
    since: int


def _window(period: BudgetPeriod, now: datetime) -> _Window:
    now = now.astimezone(UTC)
    if period is BudgetPeriod.RUN:
        return _Window(0, 0)
    if period in _ROLLING_SECONDS:
        width = _ROLLING_SECONDS[period] // ROLLING_BUCKETS
        bucket = int(now.timestamp()) // width * width
        return _Window(bucket, bucket - ROLLING_BUCKETS * width)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period is BudgetPeriod.CALENDAR_WEEK:
        day -= timedelta(days=now.weekday())
    elif period is BudgetPeriod.CALENDAR_MONTH:
        day = day.replace(day=1)
    start = int(day.timestamp())
    return _Window(start, start)


@dataclass(slots=True)
class _Usage:
    spent_nusd: int = 0
    spent_tokens: int = 0
    held_nusd: int = 0
    held_tokens: int = 0


@dataclass(slots=True)
class _Plan:
    amount: Amount
    max_output_tokens: int | None = None
    capped: bool = False
    nusd: int = field(init=False)

    def __post_init__(self) -> None:
        self.nusd = _to_nusd(self.amount.usd)


# --- sizing a model call -------------------------------------------------------------------


def _affordable(
    line: OutputLine, headroom: Headroom, input_tokens: int, ceiling: int | None
) -> int | None:
    best = ceiling
    if headroom.tokens is not None:
        by_tokens = max(headroom.tokens - input_tokens, 0)
        best = by_tokens if best is None else min(best, by_tokens)
    if headroom.usd is not None:
        spare = headroom.usd - line.base
        if spare < 0:
            return 0
        if line.per_output_token > 0:
            n = int((spare / line.per_output_token).to_integral_value(rounding=ROUND_FLOOR))
            if best is not None:
                n = min(n, best)
            # The division is rounded to 28 digits: step back if it rounded up.
            while n > 0 and line.base + line.per_output_token * n > headroom.usd:
                n -= 1
            best = n
    return best


def affordable_max_tokens(
    headroom: Headroom,
    pricing: ModelPricing,
    input_tokens: int,
    *,
    ceiling: int | None = None,
    cache_write_tokens: int = 0,
    at: datetime | None = None,
) -> int | None:
    """The largest ``max_tokens`` whose worst case ``headroom`` pays for (0: not even the
    input fits), at most ``ceiling``; None if nothing bounds it (no limit in either unit
    and no ceiling).

    A request that fits is never refused: the caller sends this as ``max_tokens`` when the
    request asked for more (or for none) and says so in the response.
    """
    line = pricing.output_line(input_tokens, cache_write_tokens=cache_write_tokens, at=at)
    return _affordable(line, headroom, input_tokens, ceiling)


# --- the store -----------------------------------------------------------------------------


class Budgets:
    """Reserve, settle and release against the budget counters of one store.

    ``clock`` is injectable (tests move time); every time Warden stores is timezone-aware
    UTC. ``ttl`` is the default life of a reservation, ``grace`` how long after its expiry
    a slow caller may still settle it.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = _utcnow,
        ttl: timedelta = timedelta(minutes=15),
        grace: timedelta = timedelta(hours=24),
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._grace = grace
        self._reserves = itertools.count()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise UsageError("the budget clock returned a naive datetime: give it a UTC one")
        return now

    # reserve ---------------------------------------------------------------------------

    def reserve(
        self,
        targets: Sequence[Target],
        amount: Amount,
        *,
        ttl: timedelta | None = None,
        reservation_id: str | None = None,
    ) -> Reservation | Exceeded:
        """Hold ``amount`` in every counter of ``targets``, or in none (``Exceeded``)."""
        return self._reserve(targets, lambda _headroom: _Plan(amount), ttl, reservation_id)

    def reserve_call(
        self,
        targets: Sequence[Target],
        pricing: ModelPricing,
        input_tokens: int,
        max_output_tokens: int | None,
        *,
        cache_write_tokens: int = 0,
        min_output_tokens: int = 1,
        at: datetime | None = None,
        ttl: timedelta | None = None,
        reservation_id: str | None = None,
    ) -> Reservation | Exceeded:
        """Reserve a model call's worst case, sized to what the budgets can pay.

        The output tokens reserved are ``max_output_tokens`` (or, when None, the context
        window's room), capped in the same transaction to what every budget can pay; the
        reservation says so (``capped``, ``max_output_tokens``). ``Exceeded`` only when not
        even ``min_output_tokens`` fit. ``at`` is the request's time (for dated prices).
        """
        if min_output_tokens < 1:
            raise UsageError("min_output_tokens must be at least 1")
        ceiling = max_output_tokens
        if ceiling is None and pricing.context_window is not None:
            ceiling = pricing.context_window - input_tokens
        if ceiling is not None and ceiling < min_output_tokens:
            raise UsageError(
                f"no room for output: max_output_tokens / the context window leave {ceiling} "
                f"tokens after {input_tokens} input tokens of model {pricing.model!r}"
            )
        line = pricing.output_line(input_tokens, cache_write_tokens=cache_write_tokens, at=at)

        def cost(n: int) -> Amount:
            return Amount(line.base + line.per_output_token * n, input_tokens + n)

        def plan(headroom: Headroom) -> _Plan:
            n = _affordable(line, headroom, input_tokens, ceiling)
            if n is None:  # nothing limits the output: reserve what the input costs
                return _Plan(cost(0), None, False)
            if n < min_output_tokens:
                return _Plan(cost(min_output_tokens))  # does not fit: refused
            # Capped: the budgets pay for less than the request (or the context) allows.
            return _Plan(cost(n), n, ceiling is None or n < ceiling)

        return self._reserve(targets, plan, ttl, reservation_id)

    def _reserve(
        self,
        targets: Sequence[Target],
        plan_for: Callable[[Headroom], _Plan],
        ttl: timedelta | None,
        reservation_id: str | None,
    ) -> Reservation | Exceeded:
        keys = [t.key for t in targets]
        if len(set(keys)) != len(keys):
            raise UsageError(f"a call lists the same budget counter twice: {sorted(keys)}")
        rid = reservation_id or uuid.uuid4().hex
        life = ttl if ttl is not None else self._ttl
        if life <= timedelta(0):
            raise UsageError("a reservation's ttl must be positive")
        if not targets:
            now = self._now()
            p = plan_for(Headroom(None, None))
            return Reservation(rid, (), p.amount, now, now + life, p.max_output_tokens, p.capped)
        sweep = next(self._reserves) % _SWEEP_EVERY == 0
        with self._store.write() as conn:
            self._store.lock(conn, *(f"budget:{k}" for k in keys))
            now = self._now()
            now_us = _epoch_us(now)
            windows = [_window(t.limit.period, now) for t in targets]
            if sweep:
                self._sweep(conn, now_us, keys)
            usage = self._usage(conn, targets, windows, now_us)
            statuses = [
                _status(t, w, usage.get(t.key, _Usage()))
                for t, w in zip(targets, windows, strict=True)
            ]
            headroom = _headroom(statuses)
            plan = plan_for(headroom)
            short = [s for s in statuses if not _fits(s, plan)]
            if short:
                return Exceeded(plan.amount, headroom, tuple(short))
            expires = now + life
            conn.execute(
                insert(budget_holds),
                [
                    {
                        "reservation_id": rid,
                        "budget_key": t.key,
                        "bucket": w.bucket,
                        "nusd": plan.nusd,
                        "tokens": plan.amount.tokens,
                        "created_us": now_us,
                        "expires_us": _epoch_us(expires),
                    }
                    for t, w in zip(targets, windows, strict=True)
                ],
            )
        return Reservation(
            rid, tuple(targets), plan.amount, now, expires, plan.max_output_tokens, plan.capped
        )

    # settle / release ------------------------------------------------------------------

    def settle(
        self,
        reservation: Reservation,
        actual: Amount,
        *,
        on_crossed: Callable[[Connection, tuple[Crossing, ...]], None] | None = None,
    ) -> Settlement:
        """Record what the call actually cost and free its reservation.

        ``on_crossed(conn, crossings)`` runs in the settle's own transaction when it takes
        a budget past one of its ``alert_at`` fractions (to enqueue the alert with it).

        ``actual`` is recorded as it happened, also when it is more than was reserved (the
        only overshoot: see the module docstring). Raises ``UsageError`` if the reservation
        was already settled or released (or expired more than ``grace`` ago and swept).
        """
        over = Amount(
            max(actual.usd - reservation.amount.usd, Decimal(0)),
            max(actual.tokens - reservation.amount.tokens, 0),
        )
        if not reservation.targets:
            return Settlement(reservation.id, actual, over, False)
        nusd = _to_nusd(actual.usd)
        by_key = {t.key: t for t in reservation.targets}
        with self._store.write() as conn:
            self._store.lock(conn, *(f"budget:{k}" for k in by_key))
            now = self._now()
            now_us = _epoch_us(now)
            holds = conn.execute(
                select(
                    budget_holds.c.budget_key, budget_holds.c.bucket, budget_holds.c.expires_us
                ).where(budget_holds.c.reservation_id == reservation.id)
            ).all()
            if not holds:
                raise UsageError(
                    f"reservation {reservation.id} holds nothing: it was already settled or "
                    f"released, or expired more than {self._grace} ago; settle or release "
                    "each reservation once"
                )
            late = any(h.expires_us <= now_us for h in holds)
            alerting = [by_key[h.budget_key] for h in holds if by_key[h.budget_key].limit.alert_at]
            windows = {t.key: _window(t.limit.period, now) for t in alerting}
            before = (
                self._usage(conn, alerting, [windows[t.key] for t in alerting], now_us)
                if alerting
                else {}
            )
            conn.execute(
                _add_spend(conn.dialect.name),
                [
                    {
                        "budget_key": h.budget_key,
                        "bucket": h.bucket,
                        "spent_nusd": nusd,
                        "spent_tokens": actual.tokens,
                    }
                    for h in holds
                ],
            )
            conn.execute(
                delete(budget_holds).where(budget_holds.c.reservation_id == reservation.id)
            )
            crossed: list[Crossing] = []
            buckets = {h.budget_key: h.bucket for h in holds}
            for t in alerting:
                counted = buckets[t.key] >= windows[t.key].since
                was = before.get(t.key, _Usage())
                crossed += _crossings(
                    t, was, nusd if counted else 0, actual.tokens if counted else 0
                )
            if crossed and on_crossed is not None:
                on_crossed(conn, tuple(crossed))  # an alert exists exactly when the spend does
        return Settlement(reservation.id, actual, over, late, tuple(crossed))

    def release(self, reservation: Reservation) -> bool:
        """Free a reservation without spending (the call failed before the upstream billed
        anything). True if it held something; releasing twice, or after a settle, is a
        no-op. Takes no lock: removing a hold only ever leaves more room."""
        if not reservation.targets:
            return False
        with self._store.write() as conn:
            result = conn.execute(
                delete(budget_holds).where(budget_holds.c.reservation_id == reservation.id)
            )
            return bool(result.rowcount)

    # reading ---------------------------------------------------------------------------

    def status(self, targets: Sequence[Target]) -> list[BudgetStatus]:
        """Limit, spent, reserved and left of each counter in its current period."""
        if not targets:
            return []
        now = self._now()
        windows = [_window(t.limit.period, now) for t in targets]
        with self._store.read() as conn:
            usage = self._usage(conn, targets, windows, _epoch_us(now))
        return [
            _status(t, w, usage.get(t.key, _Usage())) for t, w in zip(targets, windows, strict=True)
        ]

    def sweep(self) -> int:
        """Delete holds that expired more than ``grace`` ago (they already count for
        nothing); the number deleted. ``reserve`` also sweeps its own counters now and
        then, so calling this is housekeeping, not correctness."""
        with self._store.write() as conn:
            return self._sweep(conn, _epoch_us(self._now()), None)

    def _sweep(self, conn: Connection, now_us: int, keys: Sequence[str] | None) -> int:
        cutoff = now_us - int(self._grace.total_seconds() * 1_000_000)
        stmt = delete(budget_holds).where(budget_holds.c.expires_us < cutoff)
        if keys is not None:
            stmt = stmt.where(budget_holds.c.budget_key.in_(keys))
        return int(conn.execute(stmt).rowcount or 0)

    @staticmethod
    def _usage(
        conn: Connection, targets: Sequence[Target], windows: Sequence[_Window], now_us: int
    ) -> dict[str, _Usage]:
        """Spend and unexpired holds of each counter in its window: one statement, so one
        snapshot of both (a settle between two reads could otherwise hide its hold)."""
        s, h = budget_spend.c, budget_holds.c
        spend = (
            select(
                s.budget_key,
                literal(0).label("kind"),
                func.sum(s.spent_nusd),
                func.sum(s.spent_tokens),
            )
            .where(
                or_(
                    *(
                        and_(s.budget_key == t.key, s.bucket >= w.since)
                        for t, w in zip(targets, windows, strict=True)
                    )
                )
            )
            .group_by(s.budget_key)
        )
        held = (
            select(h.budget_key, literal(1).label("kind"), func.sum(h.nusd), func.sum(h.tokens))
            .where(
                h.expires_us > now_us,
                or_(
                    *(
                        and_(h.budget_key == t.key, h.bucket >= w.since)
                        for t, w in zip(targets, windows, strict=True)
                    )
                ),
            )
            .group_by(h.budget_key)
        )
        out: dict[str, _Usage] = {}
        for key, kind, nusd, tokens in conn.execute(union_all(spend, held)):
            u = out.setdefault(key, _Usage())
            if kind == 0:
                u.spent_nusd, u.spent_tokens = int(nusd), int(tokens)
            else:
                u.held_nusd, u.held_tokens = int(nusd), int(tokens)
        return out


def _add_spend(dialect: str) -> Any:
    stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(budget_spend)
    return stmt.on_conflict_do_update(
        index_elements=[budget_spend.c.budget_key, budget_spend.c.bucket],
        set_={
            "spent_nusd": budget_spend.c.spent_nusd + stmt.excluded.spent_nusd,
            "spent_tokens": budget_spend.c.spent_tokens + stmt.excluded.spent_tokens,
        },
    )


def _status(target: Target, window: _Window, u: _Usage) -> BudgetStatus:
    lim = target.limit
    limit_nusd = _to_nusd(lim.usd, ROUND_FLOOR) if lim.usd is not None else None
    left_nusd = None if limit_nusd is None else max(limit_nusd - u.spent_nusd - u.held_nusd, 0)
    left_tokens = (
        None if lim.tokens is None else max(lim.tokens - u.spent_tokens - u.held_tokens, 0)
    )
    since = None if lim.period is BudgetPeriod.RUN else datetime.fromtimestamp(window.since, UTC)
    return BudgetStatus(
        budget=lim.name,
        scope=lim.scope,
        period=lim.period,
        scope_key=target.scope_key,
        since=since,
        limit_usd=None if limit_nusd is None else _usd(limit_nusd),
        spent_usd=_usd(u.spent_nusd),
        reserved_usd=_usd(u.held_nusd),
        left_usd=None if left_nusd is None else _usd(left_nusd),
        limit_tokens=lim.tokens,
        spent_tokens=u.spent_tokens,
        reserved_tokens=u.held_tokens,
        left_tokens=left_tokens,
    )


def _headroom(statuses: Sequence[BudgetStatus]) -> Headroom:
    usd = [s.left_usd for s in statuses if s.left_usd is not None]
    tokens = [s.left_tokens for s in statuses if s.left_tokens is not None]
    return Headroom(min(usd) if usd else None, min(tokens) if tokens else None)


def _fits(status: BudgetStatus, plan: _Plan) -> bool:
    if status.left_usd is not None and plan.nusd > _to_nusd(status.left_usd):
        return False
    return status.left_tokens is None or plan.amount.tokens <= status.left_tokens


def _crossings(target: Target, before: _Usage, add_nusd: int, add_tokens: int) -> list[Crossing]:
    lim = target.limit
    out: list[Crossing] = []
    units: list[tuple[Literal["usd", "tokens"], int | None, int, int]] = [
        (
            "usd",
            None if lim.usd is None else _to_nusd(lim.usd, ROUND_FLOOR),
            before.spent_nusd,
            add_nusd,
        ),
        ("tokens", lim.tokens, before.spent_tokens, add_tokens),
    ]
    for unit, limit, was, add in units:
        if limit is None or add == 0:
            continue
        now = was + add
        for fraction in lim.alert_at:
            mark = fraction * limit
            if was < mark <= now:
                shown_limit: Money | int = _usd(limit) if unit == "usd" else limit
                shown_spent: Money | int = _usd(now) if unit == "usd" else now
                out.append(
                    Crossing(lim.name, target.scope_key, unit, fraction, shown_limit, shown_spent)
                )
    return out


__all__ = [
    "ROLLING_BUCKETS",
    "Amount",
    "BudgetStatus",
    "Budgets",
    "Crossing",
    "Exceeded",
    "Headroom",
    "Limit",
    "Reservation",
    "Settlement",
    "Target",
    "affordable_max_tokens",
    "targets_for",
]
