"""``warden eval run`` throughput: N scenarios of the refund-triage suite with its
scripted agent, each on its own store and a fresh copy of the helpdesk.

Target (issue 11, §7): 1,000 scenarios in at most 60 s on a 2-core machine. The suite's
cases (normal and adversarial ticket kinds, scripted call lists) are repeated under new
ids until there are N; everything ``warden eval run`` does is timed (loading, per-trial
store and gateway, the agent, reading the ledger back, the state diff, scoring, gates),
end to end, ``--rounds`` times; the median and the per-case figure are printed.

    .venv/bin/python -m benchmarks.bench_evals [--cases 1000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from warden.evals import evaluate, load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "examples" / "refund_triage" / "evals" / "suite.yaml"


def make_suite(directory: Path, n: int) -> Path:
    """The demo suite with its cases repeated (new ids) until there are ``n``."""
    base = load_suite(SUITE)
    cases = []
    for i in range(n):
        case = base.cases[i % len(base.cases)]
        cases.append({**case.model_dump(mode="json", exclude_none=True), "id": f"{case.id}-{i}"})
    (directory / "cases.jsonl").write_text(
        "".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8"
    )
    suite = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    evals = SUITE.parent
    suite.update(
        spec=str(evals.parent / "workflow.yaml"),
        environment=f"{evals / 'env.py'}:make_environment",
        agent=f"{evals / 'agent.py'}:work",
        cases=[{"include": "cases.jsonl"}],
    )
    path = directory / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    ns = parser.parse_args()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        suite = make_suite(Path(tmp), ns.cases)
        for _ in range(ns.rounds):
            started = time.perf_counter()
            report = evaluate(suite, quarantine=Path(tmp) / "q.json")
            seconds.append(time.perf_counter() - started)
            assert report.figures.cases == ns.cases and report.passed, report.reasons
    median = statistics.median(seconds)
    print(
        f"{ns.cases} scenarios: median {median:.1f} s over {ns.rounds} round(s) "
        f"({median / ns.cases * 1000:.1f} ms a scenario; all rounds: "
        f"{', '.join(f'{s:.1f}' for s in seconds)} s); target <= 60 s"
    )


if __name__ == "__main__":
    main()
