"""Hard budgets on real stores (SQLite and PostgreSQL): racing callers in threads and in
processes get exactly what the cap pays for; settle, release, expiry, periods, scopes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from warden.economics import (
    Amount,
    BudgetPeriod,
    Budgets,
    BudgetScope,
    BudgetStatus,
    Exceeded,
    Headroom,
    Limit,
    Reservation,
    Target,
    affordable_max_tokens,
    pricing_for,
    targets_for,
)
from warden.errors import UsageError
from warden.store import Store

CENT = Decimal("0.01")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.dispose()


def run_budget(usd: str | None = None, tokens: int | None = None, **kw: object) -> Limit:
    return Limit(
        "per_run",
        BudgetScope.RUN,
        BudgetPeriod.RUN,
        None if usd is None else Decimal(usd),
        tokens,
        **kw,  # type: ignore[arg-type]
    )


def one(limit: Limit, key: str = "run-1") -> list[Target]:
    return [Target(limit, key)]


def status_of(budgets: Budgets, targets: list[Target]) -> BudgetStatus:
    [status] = budgets.status(targets)
    return status


def reserved(result: Reservation | Exceeded) -> Reservation:
    assert isinstance(result, Reservation), result
    return result


# --- the race ------------------------------------------------------------------------------


def race(budgets: Budgets, targets: list[Target], n: int, amount: Amount) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        results[i] = budgets.reserve(targets, amount)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_200_threads_racing_a_cap_get_exactly_what_it_pays_for(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("1.234"))  # pays for 123 reservations of one cent
    results = race(budgets, targets, 200, Amount(CENT))
    won = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, Exceeded)]
    assert (len(won), len(refused)) == (123, 77)
    status = status_of(budgets, targets)
    assert status.reserved_usd == Decimal("1.23") <= Decimal("1.234")
    # No call was refused while a cent was left: each refusal saw less than it needed.
    assert all(r.headroom.usd is not None and r.headroom.usd < CENT for r in refused)
    assert status.left_usd == Decimal("0.004")


def test_racing_reserve_and_settle_never_spend_past_the_cap(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("0.50"))
    barrier = threading.Barrier(100)
    outcomes: list[str] = []
    refused: list[Exceeded] = []

    def go() -> None:
        barrier.wait()
        r = budgets.reserve(targets, Amount(CENT))
        if isinstance(r, Reservation):
            budgets.settle(r, Amount(Decimal("0.006")))  # the call cost less than reserved
            outcomes.append("won")
        else:
            refused.append(r)
            outcomes.append("refused")

    threads = [threading.Thread(target=go) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = status_of(budgets, targets)
    assert status.spent_usd == outcomes.count("won") * Decimal("0.006") <= Decimal("0.50")
    assert status.reserved_usd == 0
    # Settling below the reservation returns money that later callers can use: at least
    # the 50 one-cent reservations the cap holds ran, at most the 83 settles it pays for.
    assert 50 <= outcomes.count("won") <= 83
    assert all(r.headroom.usd is not None and r.headroom.usd < CENT for r in refused)


WORKER = textwrap.dedent(
    """
    import json, sys, threading, time
    from decimal import Decimal
    from pathlib import Path
    from warden.economics import Amount, BudgetPeriod, Budgets, BudgetScope, Limit, Reservation, Target
    from warden.store import Store

    url, go_file, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    store = Store(url, create=False)
    budgets = Budgets(store)
    targets = [Target(Limit("cap", BudgetScope.GLOBAL, BudgetPeriod.CALENDAR_MONTH, Decimal("0.57")), "*")]
    barrier = threading.Barrier(n)
    won, refused_with_money_left = [], []

    def go():
        barrier.wait()
        r = budgets.reserve(targets, Amount(Decimal("0.01")))
        if isinstance(r, Reservation):
            won.append(r.id)
        elif r.headroom.usd >= Decimal("0.01"):
            refused_with_money_left.append(str(r.headroom.usd))

    threads = [threading.Thread(target=go) for _ in range(n)]
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.001)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"won": len(won), "bad": refused_with_money_left}))
    store.dispose()
    """
)


def test_two_processes_racing_one_cap_get_exactly_what_it_pays_for(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    go_file = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, store_url, str(go_file), "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:  # both have imported, connected and made their threads
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go_file.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["won"] for o in outs) == 57  # $0.57 pays for 57 cents, whoever asks
    assert [o["bad"] for o in outs] == [[], []]  # nobody refused while a cent was left
    limit = Limit("cap", BudgetScope.GLOBAL, BudgetPeriod.CALENDAR_MONTH, Decimal("0.57"))
    assert status_of(Budgets(store), [Target(limit, "*")]).left_usd == 0


# --- settle, release, expiry ---------------------------------------------------------------


def test_settling_below_the_reservation_returns_the_difference(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("1", tokens=1000))
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.5"), 600)))
    done = budgets.settle(r, Amount(Decimal("0.3"), 400))
    assert done.over_reservation == Amount() and not done.late
    status = status_of(budgets, targets)
    assert (status.spent_usd, status.reserved_usd, status.left_usd) == (
        Decimal("0.3"),
        0,
        Decimal("0.7"),
    )
    assert (status.spent_tokens, status.reserved_tokens, status.left_tokens) == (400, 0, 600)


def test_settling_above_the_reservation_records_what_happened_and_says_so(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("1"))
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.5"))))
    done = budgets.settle(r, Amount(Decimal("0.8")))
    assert done.over_reservation == Amount(Decimal("0.3"))
    assert status_of(budgets, targets).spent_usd == Decimal("0.8")
    refused = budgets.reserve(targets, Amount(Decimal("0.3")))
    assert isinstance(refused, Exceeded) and refused.headroom.usd == Decimal("0.2")


def test_release_frees_the_money_once(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("1"))
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.9"))))
    assert isinstance(budgets.reserve(targets, Amount(Decimal("0.2"))), Exceeded)
    assert budgets.release(r) is True
    assert budgets.release(r) is False  # twice: nothing more to free
    assert status_of(budgets, targets).left_usd == 1
    reserved(budgets.reserve(targets, Amount(Decimal("0.2"))))
    with pytest.raises(UsageError, match="already settled or released"):
        budgets.settle(r, Amount(Decimal("0.9")))


def test_a_crashed_callers_reservation_expires_and_a_late_settle_still_counts(
    store: Store,
) -> None:
    clock = Clock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    budgets = Budgets(store, clock=clock, grace=timedelta(hours=1))
    targets = one(run_budget("1"))
    crashed = reserved(budgets.reserve(targets, Amount(Decimal("0.9")), ttl=timedelta(minutes=5)))
    slow = reserved(budgets.reserve(targets, Amount(Decimal("0.1")), ttl=timedelta(minutes=5)))
    assert isinstance(budgets.reserve(targets, Amount(Decimal("0.5"))), Exceeded)
    clock.advance(minutes=5)  # both expire: their money is free at once, no sweeper needed
    assert status_of(budgets, targets).reserved_usd == 0
    again = reserved(budgets.reserve(targets, Amount(Decimal("0.5")), ttl=timedelta(hours=5)))
    # The slow caller was not dead: its settle is late, and recorded all the same.
    done = budgets.settle(slow, Amount(Decimal("0.1")))
    assert done.late
    assert status_of(budgets, targets).spent_usd == Decimal("0.1")
    # Past the grace, the crashed caller's hold is swept; settling it now is refused.
    clock.advance(hours=2)
    assert budgets.sweep() == 1
    with pytest.raises(UsageError, match="holds nothing"):
        budgets.settle(crashed, Amount(Decimal("0.9")))
    assert budgets.release(again)
    assert status_of(budgets, targets).left_usd == Decimal("0.9")


# --- periods -------------------------------------------------------------------------------


def tenant_budget(period: BudgetPeriod) -> list[Target]:
    return [Target(Limit("daily", BudgetScope.TENANT, period, Decimal("1")), "acme")]


def spend(budgets: Budgets, targets: list[Target], usd: str) -> None:
    r = reserved(budgets.reserve(targets, Amount(Decimal(usd))))
    budgets.settle(r, Amount(Decimal(usd)))


def left(budgets: Budgets, targets: list[Target]) -> Decimal | None:
    return status_of(budgets, targets).left_usd


def test_a_calendar_day_starts_again_at_midnight_utc(store: Store) -> None:
    clock = Clock(datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    budgets = Budgets(store, clock=clock)
    targets = tenant_budget(BudgetPeriod.CALENDAR_DAY)
    spend(budgets, targets, "0.9")
    clock.now = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert left(budgets, targets) == Decimal("0.1")
    clock.now = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert left(budgets, targets) == 1
    assert status_of(budgets, targets).since == datetime(2026, 3, 2, tzinfo=UTC)


def test_calendar_weeks_start_on_monday_and_months_on_the_first(store: Store) -> None:
    clock = Clock(datetime(2026, 3, 1, 22, tzinfo=UTC))  # a Sunday
    budgets = Budgets(store, clock=clock)
    week, month = (
        tenant_budget(BudgetPeriod.CALENDAR_WEEK),
        tenant_budget(BudgetPeriod.CALENDAR_MONTH),
    )
    spend(budgets, week, "0.9")
    spend(budgets, month, "0.9")
    clock.now = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)  # Monday
    assert (left(budgets, week), left(budgets, month)) == (1, Decimal("0.1"))
    clock.now = datetime(2026, 3, 31, 23, 59, tzinfo=UTC)
    assert left(budgets, month) == Decimal("0.1")
    clock.now = datetime(2026, 4, 1, tzinfo=UTC)
    assert left(budgets, month) == 1


def test_a_rolling_day_counts_spend_for_at_least_24_hours_and_at_most_25(store: Store) -> None:
    start = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    clock = Clock(start)
    budgets = Budgets(store, clock=clock)
    targets = tenant_budget(BudgetPeriod.ROLLING_DAY)
    spend(budgets, targets, "0.9")
    clock.now = datetime(2026, 3, 2, 0, 10, tzinfo=UTC)  # a calendar day would be new
    assert left(budgets, targets) == Decimal("0.1")
    clock.now = start + timedelta(hours=24)
    assert left(budgets, targets) == Decimal("0.1")  # never forgotten early
    clock.now = start + timedelta(hours=25)
    assert left(budgets, targets) == 1  # and gone within one bucket (1 h) more


# --- scopes and units ----------------------------------------------------------------------


def test_a_call_reserves_in_all_its_budgets_or_in_none(store: Store) -> None:
    budgets = Budgets(store)
    run = Limit("per_run", BudgetScope.RUN, BudgetPeriod.RUN, Decimal("1"))
    tenant = Limit("tenant_daily", BudgetScope.TENANT, BudgetPeriod.CALENDAR_DAY, Decimal("0.5"))
    targets = [Target(run, "run-1"), Target(tenant, "acme")]
    refused = budgets.reserve(targets, Amount(Decimal("0.6")))
    assert isinstance(refused, Exceeded)
    assert refused.budget == "tenant_daily"
    assert refused.headroom.usd == Decimal("0.5")
    assert [s.reserved_usd for s in budgets.status(targets)] == [0, 0]  # the run held nothing
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.4"))))
    assert [s.reserved_usd for s in budgets.status(targets)] == [Decimal("0.4")] * 2
    budgets.settle(r, Amount(Decimal("0.4")))
    assert [s.left_usd for s in budgets.status(targets)] == [Decimal("0.6"), Decimal("0.1")]


def test_scopes_give_each_run_tenant_and_end_user_its_own_counter(store: Store) -> None:
    budgets = Budgets(store)
    user = Limit("per_user", BudgetScope.END_USER, BudgetPeriod.CALENDAR_DAY, Decimal("1"))
    alice = targets_for(
        [user], tenant="acme", workflow="w", agent="bot", run_id="r1", end_user="alice"
    )
    bob = targets_for([user], tenant="acme", workflow="w", agent="bot", run_id="r2", end_user="bob")
    other = targets_for(
        [user], tenant="globex", workflow="w", agent="bot", run_id="r3", end_user="alice"
    )
    spend(budgets, list(alice), "1")
    assert isinstance(budgets.reserve(alice, Amount(CENT)), Exceeded)
    reserved(budgets.reserve(bob, Amount(CENT)))
    reserved(budgets.reserve(other, Amount(CENT)))  # another tenant's alice is another user


def test_a_token_budget_counts_tokens(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget(tokens=1000))
    reserved(budgets.reserve(targets, Amount(Decimal("100"), 600)))  # no USD limit: any money
    refused = budgets.reserve(targets, Amount(Decimal(0), 600))
    assert isinstance(refused, Exceeded) and refused.headroom.tokens == 400


# --- model calls ---------------------------------------------------------------------------


def test_a_model_call_that_fits_is_capped_to_what_is_left_never_refused(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("0.001"))
    pricing = pricing_for("openai", "gpt-4o-mini")
    # Asked for 4,000 output tokens; $0.001 pays for the input and 1,416 of them.
    r = reserved(budgets.reserve_call(targets, pricing, 1000, 4000))
    assert (r.max_output_tokens, r.capped) == (1416, True)
    assert r.amount == Amount(pricing.worst_case(1000, 1416), 1000 + 1416)
    budgets.release(r)
    # A request that fits is left alone.
    r = reserved(budgets.reserve_call(targets, pricing, 1000, 100))
    assert (r.max_output_tokens, r.capped) == (100, False)
    budgets.release(r)
    # With no max_tokens the call gets what the money pays for, and is told.
    r = reserved(budgets.reserve_call(targets, pricing, 1000, None))
    assert (r.max_output_tokens, r.capped) == (1416, True)
    # ... and with money enough, what the context window leaves, uncapped.
    rich = one(run_budget("10"), key="run-2")
    big = reserved(budgets.reserve_call(rich, pricing, 1000, None))
    assert (big.max_output_tokens, big.capped) == (128_000 - 1000, False)
    # What is left now cannot pay even the input of another call: refused, with what is left.
    refused = budgets.reserve_call(targets, pricing, 1000, 100)
    assert isinstance(refused, Exceeded)
    assert refused.headroom.usd == Decimal("0.001") - pricing.worst_case(1000, 1416)
    assert refused.needed == Amount(pricing.worst_case(1000, 1), 1001)


def test_racing_model_calls_share_the_money_without_overspending(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("0.01"))
    pricing = pricing_for("openai", "gpt-4o-mini")
    barrier = threading.Barrier(40)
    results: list[Reservation | Exceeded] = []

    def go() -> None:
        barrier.wait()
        results.append(budgets.reserve_call(targets, pricing, 2000, 4000))

    threads = [threading.Thread(target=go) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, Reservation)]
    assert sum(r.amount.usd for r in won) <= Decimal("0.01")
    # Everyone who got nothing found less than one output token's worth left.
    smallest = pricing.worst_case(2000, 1)
    assert all(
        r.headroom.usd is not None and r.headroom.usd < smallest
        for r in results
        if isinstance(r, Exceeded)
    )


def test_affordable_max_tokens_is_the_largest_output_the_money_pays_for() -> None:
    pricing = pricing_for("openai", "gpt-4o-mini")
    for left in ("0.00015", "0.001", "0.0123457", "1"):
        headroom = Headroom(Decimal(left), None)
        n = affordable_max_tokens(headroom, pricing, 1000, ceiling=10_000_000)
        assert n is not None
        assert pricing.worst_case(1000, n) <= Decimal(left) < pricing.worst_case(1000, n + 1)
    # $0.001 pays the input ($0.00015) and 1,416 output tokens at $0.60 / MTok.
    assert affordable_max_tokens(Headroom(Decimal("0.001"), None), pricing, 1000) == 1416
    # Not even the input fits: nothing.
    assert affordable_max_tokens(Headroom(Decimal("0.0001"), None), pricing, 1000) == 0
    # Tokens left bound it too, and so does the ceiling (the request's max_tokens).
    assert affordable_max_tokens(Headroom(Decimal(1), 1500), pricing, 1000) == 500
    assert affordable_max_tokens(Headroom(Decimal(1), None), pricing, 1000, ceiling=64) == 64
    assert affordable_max_tokens(Headroom(None, None), pricing, 1000) is None


# --- alerts --------------------------------------------------------------------------------


def test_a_settle_reports_the_alert_thresholds_it_crossed_once(store: Store) -> None:
    budgets = Budgets(store)
    targets = one(run_budget("1", alert_at=(Decimal("0.5"), Decimal("0.8"))))
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.4"))))
    assert budgets.settle(r, Amount(Decimal("0.4"))).crossed == ()
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.45"))))
    crossed = budgets.settle(r, Amount(Decimal("0.45"))).crossed
    assert [(c.budget, c.unit, c.threshold, c.spent) for c in crossed] == [
        ("per_run", "usd", Decimal("0.5"), Decimal("0.85")),
        ("per_run", "usd", Decimal("0.8"), Decimal("0.85")),
    ]
    r = reserved(budgets.reserve(targets, Amount(Decimal("0.1"))))
    assert budgets.settle(r, Amount(Decimal("0.1"))).crossed == ()  # already past both


def test_misuse_is_refused_with_what_to_fix(store: Store) -> None:
    budgets = Budgets(store)
    limit = run_budget("1")
    with pytest.raises(UsageError, match="same budget counter twice"):
        budgets.reserve([Target(limit, "r"), Target(limit, "r")], Amount(CENT))
    with pytest.raises(UsageError, match="never a float"):
        Amount(0.01)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="naive datetime"):
        Budgets(store, clock=lambda: datetime(2026, 1, 1)).reserve(one(limit), Amount(CENT))  # noqa: DTZ001
