"""The server's per-call resume of a run: state kept between calls in one process only
while it is the stored version (hole m: state follows the call)."""

from __future__ import annotations

from typing import Any

from conftest import Effects, make_gateway

from warden import Allowed, Gateway
from warden.pipeline._runs import claim_step
from warden.results import Pending


async def test_a_run_state_is_kept_for_the_next_call_only_while_it_is_the_stored_one(
    store_url: str, effects: Effects
) -> None:
    """The server's per-call resume (claim the step, resume, call, save) keeps the saved
    RunState for the run's next call in the same process; once another replica saved the
    run, the next call here reads the stored state instead, and sees what that call saw."""
    here, there = make_gateway(store_url, effects), make_gateway(store_url, effects)

    async def served_by(gw: Gateway, run_id: str, tool: str, args: dict[str, Any]) -> Any:
        row = claim_step(gw.store, run_id, workflows=("shop",), tenant="t")
        assert row is not None
        run = gw.resume_run(run_id, row=row, claimed=True)
        result = await run.call(tool, args)
        run.save()
        return run.state, result

    try:
        opened = here.open_run(tenant="t", agent="bot", task="kept")
        first, _ = await served_by(here, opened.run_id, "get_order", {"order_id": "o1"})
        second, _ = await served_by(here, opened.run_id, "get_order", {"order_id": "o2"})
        assert second is first  # nothing else wrote the run: the same state, not re-read
        assert second.counts["get_order"] == 2 and second.steps == 2
        # Another replica serves a call that reads untrusted text...
        _, doc = await served_by(there, opened.run_id, "get_doc", {"doc_id": "d1"})
        assert isinstance(doc, Allowed)
        # ...so the next call here must not go on from its own, older state.
        third, sent = await served_by(
            here, opened.run_id, "message", {"to": "mallory@evil.example", "body": "hi"}
        )
        assert third is not first
        assert third.counts == {"get_order": 2, "get_doc": 1, "message": 1}
        assert isinstance(sent, Pending)  # the recipient came from the other call's output
    finally:
        here.close()
        there.close()
