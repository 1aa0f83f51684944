"""One key, one side effect: replay a repeat, claim the key before a write runs, settle it.

``ReplayStage`` answers a repeated write (same key, same call) with the first result before
the policy is asked again; it sits after the switches, identity and scope checks, so a
replay never reaches a caller who could not have made the call. ``IdempotencyStage``
claims the key and makes the intent durable before the effect, then settles the key when
the effect stage returns: ``done`` with the result, released only if the tool declared
that nothing happened, ``unknown`` otherwise.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

from warden.ledger import canonical_json
from warden.pipeline import _idempotency as idem
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Allowed, Failed, FailureKind, Result
from warden.telemetry import Vault


def _key_of(call: Call) -> tuple[str, str]:
    tool = call.tool
    assert tool is not None
    key = call.key or call.given_key or idem.derive_key(call.run.run_id, tool.name, call.args)
    return key, idem.fingerprint(call.run.workflow, tool.name, call.args)


def replay_result(
    call: Call, found: idem.KeyRecord, fingerprint: str, vault: Vault | None = None
) -> Result:
    """What a repeat under a used key answers. The stored result is sealed with the
    tenant's vault key (it is the tool's raw output)."""
    state, result, first_action = found.state, found.result, found.action_id
    if result is not None and vault is not None:
        result = vault.unseal(call.run.tenant, result)
    if not found.binds(fingerprint):
        return Failed(
            FailureKind.IDEMPOTENCY_CONFLICT,
            f"idempotency key {call.key!r} was used by action {first_action} for another call "
            "(tool or arguments differ); use a new key for a new action",
            call.action_id,
        )
    if state == "done":
        return Allowed(
            None if result is None else json.loads(result), call.action_id, replayed=True
        )
    if state == "started":
        return Failed(
            FailureKind.IN_PROGRESS,
            f"action {first_action} with this idempotency key is executing, or stopped between "
            "intent and outcome; not executing it again",
            call.action_id,
        )
    return Failed(
        FailureKind.OUTCOME_UNKNOWN,
        f"action {first_action} with this idempotency key may have had its effect; not "
        "executing it again until it is reconciled (warden ledger settle)",
        call.action_id,
    )


class ReplayStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        if not tool.effect.is_write or call.approval is not None:
            return await next(call)
        call.key, fingerprint = _key_of(call)
        tenant = call.run.tenant
        found = idem.peek(self.svc.store.engine, tenant, call.key)
        found = self.svc.settling.overlay(tenant, call.key, found)
        if found is None:
            return await next(call)
        return replay_result(call, found, fingerprint, self.svc.vault)


class IdempotencyStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        if not tool.effect.is_write:
            return await next(call)
        call.key, fingerprint = _key_of(call)
        refused = await asyncio.to_thread(self._claim, call, fingerprint)
        if refused is not None:
            return refused
        try:
            result = await next(call)
        except BaseException:
            await asyncio.to_thread(self._settle, call, None)
            raise
        if isinstance(result, Allowed):
            self._settle_later(call, result, fingerprint)
        else:
            await asyncio.to_thread(self._settle, call, result)
        return result

    def _settle_later(self, call: Call, result: Allowed, fingerprint: str) -> None:
        """``done``, written with the ``executed`` event in the ledger's next batch rather
        than in a transaction of its own on the call's path (a thread hand-off saved); until
        then this process replays from ``Settling``. A crash before that batch leaves the
        key ``started`` beside an intent without outcome, as a crash before any settlement
        would: repeats are refused and ``warden ledger unsettled`` lists it."""
        svc, tenant, key = self.svc, call.run.tenant, call.key
        assert key is not None
        # Made (and checked to be writable) by VerifyStage.
        text = call.result_json if call.result_json is not None else canonical_json(result.result)
        record = idem.KeyRecord("done", text, call.action_id, fingerprint)
        svc.settling.put(tenant, key, record)
        stored = text if svc.vault is None else svc.vault.seal(tenant, text)
        svc.ledger.defer(
            partial(idem.settle_done_text, tenant=tenant, key=key, text=stored),
            after=partial(svc.settling.written, tenant, key, record),
        )

    def _claim(self, call: Call, fingerprint: str) -> Result | None:
        """Claim the key and make the intent durable, in one transaction (off the loop)."""
        svc, run, tool, key = self.svc, call.run, call.tool, call.key
        assert tool is not None and key is not None
        with svc.ledger.transaction() as conn:
            if not idem.claim(
                conn,
                tenant=run.tenant,
                key=key,
                run_id=run.run_id,
                action_id=call.action_id,
                tool=tool.name,
                now=svc.clock(),
                fingerprint=fingerprint,
            ):
                found = svc.settling.overlay(run.tenant, key, idem.lookup(conn, run.tenant, key))
                assert found is not None
                return replay_result(call, found, fingerprint, self.svc.vault)
            svc.emit(
                run.run_id,
                run.tenant,
                "intent",
                {
                    "action_id": call.action_id,
                    "tool": tool.name,
                    "args": call.args,
                    "idempotency_key": key,
                },
            )
        return None

    def _settle(self, call: Call, result: Result | None) -> None:
        """A call that did not succeed: its key released (the tool declared that nothing
        happened) or ``unknown``. Not fsynced: the intent already is, so a power cut here
        leaves a visible "intent without outcome" and a key still "started" (repeats are
        refused, not re-run)."""
        tenant, key = call.run.tenant, call.key
        assert key is not None
        with self.svc.store.write(durable=False) as conn:
            if result is not None and not call.effect_possible:
                idem.release(conn, tenant, key)
            else:
                idem.settle_unknown(conn, tenant, key)
