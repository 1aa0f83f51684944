"""Where the τ²-bench retail data comes from, and its tasks as typed values.

The full data set (``db.json``: 500 users, 1,000 orders; ``tasks.json``: 114 tasks) is read
from a directory given by ``--data DIR`` or ``TAU2_RETAIL_DATA``; without one, the subset
committed under ``examples/tau2_retail/tau2/`` is used (the users and orders of 16 tasks,
all 50 products, enough to exercise every tool and rule in CI). Both are MIT-licensed by
Sierra Research (see ``tau2/LICENSE``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from examples.tau2_retail.store import RetailState

__all__ = ["BUNDLED", "ENV_VAR", "Action", "Dataset", "Task", "load"]

ENV_VAR = "TAU2_RETAIL_DATA"
BUNDLED = Path(__file__).parent / "tau2"


@dataclass(frozen=True)
class Action:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Task:
    id: str
    #: the gold actions, in order (τ²'s ``evaluation_criteria.actions``)
    actions: tuple[Action, ...]
    #: what the simulated user knows about themselves (email, or name and zip)
    known_info: str


@dataclass(frozen=True)
class Dataset:
    directory: Path
    db: dict[str, Any]
    tasks: tuple[Task, ...]

    def state(self) -> RetailState:
        return RetailState(self.db)


def data_dir(given: str | Path | None = None) -> Path:
    """``given``, else ``$TAU2_RETAIL_DATA``, else the bundled subset."""
    chosen = given if given is not None else os.environ.get(ENV_VAR) or BUNDLED
    return Path(chosen)


def load(directory: str | Path | None = None, *, task_ids: set[str] | None = None) -> Dataset:
    """The database and tasks of ``directory`` (see ``data_dir``); ``task_ids``: only those."""
    where = data_dir(directory)
    for name in ("db.json", "tasks.json"):
        if not (where / name).is_file():
            raise FileNotFoundError(f"{where / name} not found (set {ENV_VAR} or pass --data DIR)")
    db = json.loads((where / "db.json").read_text())
    tasks = []
    for raw in json.loads((where / "tasks.json").read_text()):
        if task_ids is not None and str(raw["id"]) not in task_ids:
            continue
        criteria = raw.get("evaluation_criteria") or {}
        scenario = (raw.get("user_scenario") or {}).get("instructions") or {}
        tasks.append(
            Task(
                id=str(raw["id"]),
                actions=tuple(
                    Action(a["name"], dict(a.get("arguments") or {}))
                    for a in criteria.get("actions") or []
                ),
                known_info=str(scenario.get("known_info") or ""),
            )
        )
    return Dataset(where, db, tuple(tasks))
