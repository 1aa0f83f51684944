"""Evals: scenario suites run against the agent under test through the governed pipeline,
scored from the ledger and the environment's state, gated for CI (docs/evals.md)."""

from warden.evals._env import (
    CollectionDiff,
    Environment,
    SQLiteEnvironment,
    State,
    Updated,
    diff_states,
)
from warden.evals._evaluate import evaluate
from warden.evals._gate import (
    Baseline,
    Check,
    Figures,
    Quarantine,
    figures,
    gate,
    pass_at_k,
    pass_hat_k,
    write_baseline,
)
from warden.evals._report import Report, markdown, to_json, write_junit
from warden.evals._runner import BlockingRun, CaseResult, EvalRunner, TrialResult, load_ref
from warden.evals._scenario import (
    CallMatch,
    Case,
    CollectionChanges,
    DecisionExpect,
    Expectations,
    StateExpect,
    Suite,
    load_cases,
    load_suite,
)
from warden.evals._scorers import BUILT_IN, Detector, Score, Scorer, matches, pii_scorer
from warden.evals._trial import Action, Trial

__all__ = [
    "BUILT_IN",
    "Action",
    "Baseline",
    "BlockingRun",
    "CallMatch",
    "Case",
    "CaseResult",
    "Check",
    "CollectionChanges",
    "CollectionDiff",
    "DecisionExpect",
    "Detector",
    "Environment",
    "EvalRunner",
    "Expectations",
    "Figures",
    "Quarantine",
    "Report",
    "SQLiteEnvironment",
    "Score",
    "Scorer",
    "State",
    "StateExpect",
    "Suite",
    "Trial",
    "TrialResult",
    "Updated",
    "diff_states",
    "evaluate",
    "figures",
    "gate",
    "load_cases",
    "load_ref",
    "load_suite",
    "markdown",
    "matches",
    "pass_at_k",
    "pass_hat_k",
    "pii_scorer",
    "to_json",
    "write_baseline",
    "write_junit",
]
