"""Evals: scenario suites run against the agent under test through the governed pipeline,
scored from the ledger and the environment's state, gated for CI (docs/evals.md)."""

from warden.evals._adversarial import KINDS, Attack, Instruction
from warden.evals._approvals import approval_cases, write_cases
from warden.evals._attack_run import (
    AttackResult,
    KindFigures,
    PackReport,
    adversarial,
    follow_injections,
)
from warden.evals._calibration import Calibration, CalibrationBin, calibration
from warden.evals._diff import SpecDiff, diff_specs
from warden.evals._env import (
    CollectionDiff,
    Environment,
    MemoryEnvironment,
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
from warden.evals._model_agent import ModelAgent, model_agent, tool_definitions
from warden.evals._replay import ReplayedCall, ReplayReport, replay
from warden.evals._report import Report, markdown, to_json, write_junit
from warden.evals._runner import BlockingRun, CaseResult, EvalRunner, TrialResult, load_ref
from warden.evals._sandbox import SandboxReport, SandboxStep, sandbox_replay
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
from warden.evals._scorers import (
    BUILT_IN,
    Detector,
    Score,
    Scorer,
    matches,
    pii_leak,
    pii_scorer,
)
from warden.evals._trial import Action, Trial

__all__ = [
    "BUILT_IN",
    "KINDS",
    "Action",
    "Attack",
    "AttackResult",
    "Baseline",
    "BlockingRun",
    "Calibration",
    "CalibrationBin",
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
    "Instruction",
    "KindFigures",
    "MemoryEnvironment",
    "ModelAgent",
    "PackReport",
    "Quarantine",
    "ReplayReport",
    "ReplayedCall",
    "Report",
    "SQLiteEnvironment",
    "SandboxReport",
    "SandboxStep",
    "Score",
    "Scorer",
    "SpecDiff",
    "State",
    "StateExpect",
    "Suite",
    "Trial",
    "TrialResult",
    "Updated",
    "adversarial",
    "approval_cases",
    "calibration",
    "diff_specs",
    "diff_states",
    "evaluate",
    "figures",
    "follow_injections",
    "gate",
    "load_cases",
    "load_ref",
    "load_suite",
    "markdown",
    "matches",
    "model_agent",
    "pass_at_k",
    "pass_hat_k",
    "pii_leak",
    "pii_scorer",
    "replay",
    "sandbox_replay",
    "to_json",
    "tool_definitions",
    "write_baseline",
    "write_cases",
    "write_junit",
]
