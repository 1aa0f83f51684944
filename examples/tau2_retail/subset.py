"""Write the bundled subset (``tau2/``) from the full data set.

    python -m examples.tau2_retail.subset --data DIR

The subset holds the tasks in ``TASKS``, every user those tasks' gold actions act for with
all of their orders, and all 50 products (τ²'s files, cut down; MIT, Sierra Research).
The tasks were picked to call every tool and to let every violation generator find a case:
an exchange, returns, cancellations, each kind of order modification, a payment change, a
user address change, a transfer, write-only gold lists (70, 74, 86, 100), look-ups that
fail (2, 46), and the two gold actions the store itself refuses (64, 105).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from examples.tau2_retail.data import BUNDLED, load
from examples.tau2_retail.harness import conversation, owner_of

__all__ = ["TASKS", "main"]

TASKS = ("0", "2", "10", "16", "21", "40", "42", "46", "64", "70", "74", "86", "100", "105")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.tau2_retail.subset", description=__doc__
    )
    parser.add_argument("--data", required=True, help="the full data set's directory")
    parser.add_argument("--out", type=Path, default=BUNDLED, help="where to write the subset")
    args = parser.parse_args(argv)
    full = load(args.data, task_ids=set(TASKS))
    state = full.state()
    users: set[str] = set()
    for task in full.tasks:
        users |= {u for u in (owner_of(state, a) for a in conversation(task, state)) if u}
    db = full.db
    orders = {o for u in sorted(users) for o in db["users"][u]["orders"]}
    subset = {
        "products": db["products"],
        "users": {k: v for k, v in db["users"].items() if k in users},
        "orders": {k: v for k, v in db["orders"].items() if k in orders},
    }
    raw_tasks = json.loads((Path(args.data) / "tasks.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "db.json").write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    picked = [t for t in raw_tasks if str(t["id"]) in TASKS]
    (args.out / "tasks.json").write_text(json.dumps(picked, indent=1) + "\n")
    for name in ("LICENSE", "policy.md"):
        shutil.copyfile(Path(args.data) / name, args.out / name)
    print(f"{args.out}: {len(picked)} tasks, {len(users)} users, {len(orders)} orders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
