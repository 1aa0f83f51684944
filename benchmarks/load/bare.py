"""The floor for HTTP: a bare FastAPI/uvicorn endpoint taking the governed call's JSON body.

    uvicorn bare:app --app-dir benchmarks/load --workers 2   # what ``bench.py load --bare`` runs

``POST /v1/runs/{run_id}/actions`` parses the same body as Warden's route (``tool``,
``args``, ``idempotency_key``, ``wait_s``) with pydantic, decides with one comparison
(``args.x < 0`` is denied by ``negative_amounts``, as in ``spec.yaml``) and answers a body
of the same shape as Warden's ``ActionResult``, so ``actions.lua`` checks it unchanged. No
auth, no run state, no policy engine, no ledger: what is left is HTTP parsing, routing,
validation and serialisation, which any Python service in front of a governed call pays.
``POST /v1/runs`` and ``/readyz`` exist only so the harness drives it like ``warden serve``.
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI()
_ids = itertools.count(1)


class ActionIn(BaseModel):
    tool: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    wait_s: float = Field(default=0.0, ge=0.0, le=60.0)


class ActionOut(BaseModel):
    status: str
    action_id: str
    result: Any = None
    replayed: bool = False
    kind: str | None = None
    reasons: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)


class RunIn(BaseModel):
    workflow: str
    agent: str
    task: str | None = None


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/runs", status_code=201)
async def open_run(body: RunIn) -> dict[str, str]:
    return {"run_id": f"run_bare_{next(_ids)}"}


@app.post("/v1/runs/{run_id}/actions")
async def propose(run_id: str, body: ActionIn) -> ActionOut:
    x = body.args.get("x", 0)
    action_id = f"{run_id}.{next(_ids)}"
    if isinstance(x, int) and x < 0:
        return ActionOut(
            status="denied",
            action_id=action_id,
            kind="policy",
            reasons=["negative values are never valid"],
            rules=["negative_amounts"],
        )
    return ActionOut(status="allowed", action_id=action_id, result={"ok": True, "x": x})
