"""A suite's figures (success rate, pass^k and pass@k, unsafe-write attempts, cost per
successful case, latency), the stored baseline and quarantine, and the release gates.

Figures count gating cases only: a case measured flaky in this run, or quarantined
before it, is reported apart and changes no figure that gates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from warden.errors import UsageError
from warden.evals._runner import CaseResult
from warden.spec import LoadedSpec

BASELINE_VERSION = 1


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that k trials drawn from the n run (c passed) all pass."""
    if n < k:
        return float(c == n)
    return math.comb(c, k) / math.comb(n, k)


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k: the chance that at least one of k trials drawn from the n run passes."""
    if n < k:
        return float(c > 0)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Figures:
    cases: int
    gating: int
    passed: int
    failed: int
    flaky: int
    quarantined: int
    repeat: int
    #: passed gating cases / gating cases (None: no gating case)
    success_rate: float | None
    #: over every case, over its ``repeat`` trials
    pass_hat_k: float | None
    pass_at_k: float | None
    #: write/money/delete/message calls Warden refused or held, per trial, summed over
    #: the gating cases (see ``Action.unsafe_write_attempt``)
    unsafe_writes: float
    #: everything the gating trials cost / the gating trials that passed
    cost_per_success_usd: Decimal | None
    cost_usd: Decimal
    p95_latency_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "gating": self.gating,
            "passed": self.passed,
            "failed": self.failed,
            "flaky": self.flaky,
            "quarantined": self.quarantined,
            "repeat": self.repeat,
            "success_rate": self.success_rate,
            "pass_hat_k": self.pass_hat_k,
            "pass_at_k": self.pass_at_k,
            "unsafe_writes": self.unsafe_writes,
            "cost_per_success_usd": None
            if self.cost_per_success_usd is None
            else str(self.cost_per_success_usd),
            "cost_usd": str(self.cost_usd),
            "p95_latency_ms": self.p95_latency_ms,
        }


def figures(results: list[CaseResult], repeat: int) -> Figures:
    gating = [r for r in results if r.gating]
    passed = sum(r.status == "passed" for r in gating)
    trials = [t for r in gating for t in r.counted]
    successes = sum(t.passed for t in trials)
    cost = sum((t.trial.cost_usd for t in trials), Decimal(0))
    hat = [pass_hat_k(len(r.trials), r.passes, repeat) for r in results]
    at = [pass_at_k(len(r.trials), r.passes, repeat) for r in results]
    return Figures(
        cases=len(results),
        gating=len(gating),
        passed=passed,
        failed=sum(r.status == "failed" for r in gating),
        flaky=sum(r.status == "flaky" and not r.quarantined for r in results),
        quarantined=sum(r.quarantined for r in results),
        repeat=repeat,
        success_rate=passed / len(gating) if gating else None,
        pass_hat_k=sum(hat) / len(hat) if hat else None,
        pass_at_k=sum(at) / len(at) if at else None,
        unsafe_writes=sum(
            sum(t.trial.unsafe_writes for t in r.counted) / len(r.counted) for r in gating
        ),
        cost_per_success_usd=cost / successes if successes else None,
        cost_usd=cost,
        p95_latency_ms=_p95([t.trial.latency_ms for t in trials]),
    )


# -- baseline and quarantine ------------------------------------------------------------


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"the {what} {path} is not JSON (line {exc.lineno}: {exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"the {what} {path} is not UTF-8 text") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the {what} {path} is not a JSON object")
    return data


@dataclass(frozen=True)
class Baseline:
    success_rate: float | None
    unsafe_writes: float
    cost_per_success_usd: Decimal | None
    spec_fingerprint: str | None = None
    created_at: str | None = None

    @classmethod
    def read(cls, path: Path) -> Baseline:
        data = read_json(path, "baseline")
        try:
            totals = data["figures"]
            cost = totals.get("cost_per_success_usd")
            rate = totals.get("success_rate")
            return cls(
                success_rate=None if rate is None else float(rate),
                unsafe_writes=float(totals["unsafe_writes"]),
                cost_per_success_usd=None if cost is None else Decimal(cost),
                spec_fingerprint=data.get("spec_fingerprint"),
                created_at=data.get("created_at"),
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise UsageError(f"the baseline {path} is not a Warden eval baseline ({exc})") from exc


def write_baseline(
    path: Path, suite: str, spec: LoadedSpec, figs: Figures, results: list[CaseResult]
) -> None:
    data = {
        "version": BASELINE_VERSION,
        "suite": suite,
        "workflow": spec.spec.name,
        "spec_fingerprint": spec.fingerprint,
        "created_at": datetime.now(UTC).isoformat(),
        "figures": figs.to_json(),
        "cases": {r.case.id: r.status for r in results},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def quarantine_path(baseline: Path | None, suite_path: Path, given: Path | None) -> Path:
    """Where the quarantine is recorded: ``--quarantine``, else next to the baseline
    (``NAME.quarantine.json``), else next to the suite file."""
    if given is not None:
        return given
    if baseline is not None:
        return baseline.with_name(baseline.stem + ".quarantine.json")
    return suite_path.with_name(suite_path.stem + ".quarantine.json")


#: a quarantined case is released after a run in which all of at least this many
#: trials passed
RELEASE_AFTER = 3


@dataclass
class Quarantine:
    """Flaky cases, recorded with when and how they were measured flaky."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Quarantine:
        if not path.exists():
            return cls(path)
        data = read_json(path, "quarantine")
        entries = data.get("cases")
        if not isinstance(entries, dict):
            raise UsageError(f"the quarantine {path} has no 'cases' object")
        return cls(path, {str(k): v for k, v in entries.items() if isinstance(v, dict)})

    def update(self, results: list[CaseResult]) -> tuple[list[str], list[str]]:
        """Add the cases measured flaky, release those that passed every trial (at least
        ``RELEASE_AFTER`` of them); returns (added, released)."""
        now = datetime.now(UTC).isoformat()
        added, released = [], []
        for r in results:
            if r.status == "flaky":
                entry = self.entries.get(r.case.id)
                if entry is None:
                    added.append(r.case.id)
                    entry = self.entries[r.case.id] = {"since": now}
                entry.update(
                    last_seen=now,
                    passes=r.passes,
                    trials=len(r.trials),
                    failures=sorted(
                        {f"{s.name}: {s.detail}" for t in r.trials for s in t.failures}
                    )[:5],
                )
            elif (
                r.case.id in self.entries
                and r.status == "passed"
                and len(r.trials) >= RELEASE_AFTER
            ):
                del self.entries[r.case.id]
                released.append(r.case.id)
        return added, released

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"cases": dict(sorted(self.entries.items()))}
        self.path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- gates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def gate(spec: LoadedSpec, figs: Figures, baseline: Baseline | None) -> list[Check]:
    """Every gate that applies, passed or not (the run fails if one did not pass)."""
    gates, slo = spec.spec.gates, spec.spec.slo
    checks: list[Check] = []
    rate = figs.success_rate
    if rate is None:
        checks.append(Check("cases", False, "no gating case ran (all flaky or quarantined)"))
        return checks
    target = gates.success_rate if gates.success_rate is not None else slo.success_rate
    if target is not None:
        source = "gates.success_rate" if gates.success_rate is not None else "slo.success_rate"
        checks.append(
            Check(
                "success_rate",
                rate >= target,
                f"success rate {_pct(rate)} ({figs.passed} of {figs.gating} cases) "
                f"{'meets' if rate >= target else 'is below'} the target {_pct(target)} ({source})",
            )
        )
    limit = gates.p95_latency_ms if gates.p95_latency_ms is not None else slo.p95_latency_ms
    if limit is not None and figs.p95_latency_ms is not None:
        ok = figs.p95_latency_ms <= limit
        checks.append(
            Check(
                "p95_latency",
                ok,
                f"p95 latency {figs.p95_latency_ms:.0f} ms {'within' if ok else 'above'} "
                f"{limit:g} ms",
            )
        )
    cost_cap = slo.cost_per_task_usd
    if cost_cap is not None and figs.cost_per_success_usd is not None:
        cap = Decimal(str(cost_cap))
        ok = figs.cost_per_success_usd <= cap
        checks.append(
            Check(
                "cost_per_task",
                ok,
                f"cost per successful case ${figs.cost_per_success_usd:.6f} "
                f"{'within' if ok else 'above'} ${cap} (slo.cost_per_task_usd)",
            )
        )
    if baseline is None:
        return checks
    if baseline.success_rate is not None:
        drop = (baseline.success_rate - rate) * 100
        allowed = gates.max_success_drop_points
        checks.append(
            Check(
                "success_drop",
                drop <= allowed + 1e-9,
                f"success rate {_pct(rate)} against the baseline's {_pct(baseline.success_rate)}: "
                f"{'a drop of ' + format(drop, '.1f') if drop > 0 else 'no drop'} "
                f"{'points ' if drop > 0 else ''}(at most {allowed:g} points allowed)",
            )
        )
    more = figs.unsafe_writes - baseline.unsafe_writes
    allowed_more = gates.max_unsafe_write_increase
    checks.append(
        Check(
            "unsafe_writes",
            more <= allowed_more + 1e-9,
            f"unsafe-write attempts {figs.unsafe_writes:g} against the baseline's "
            f"{baseline.unsafe_writes:g} (at most {allowed_more:g} more allowed)",
        )
    )
    now, before = figs.cost_per_success_usd, baseline.cost_per_success_usd
    if now is not None and before is not None and before > 0:
        growth = float(now / before) - 1
        allowed_growth = gates.max_cost_per_success_increase
        checks.append(
            Check(
                "cost_per_success",
                growth <= allowed_growth + 1e-9,
                f"cost per successful case ${now:.6f} against the baseline's ${before:.6f} "
                f"({growth * 100:+.1f}%, at most +{allowed_growth * 100:g}% allowed)",
            )
        )
    return checks
