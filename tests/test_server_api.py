"""The /v1 API over real HTTP on loopback: auth, runs, actions, approvals, errors."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from _stack import Stack
from conftest import SLA_SPEC, SPEC
from sqlalchemy import create_engine, text

from warden.server._fastpath import GovernedCallFastPath

PROBLEM = "application/problem+json"


def _open(client: httpx.Client, **extra: Any) -> str:
    r = client.post(
        "/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "api test", **extra}
    )
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


def _act(
    client: httpx.Client, run_id: str, tool: str, args: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    r = client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_requests_need_a_valid_key(stack: Stack) -> None:
    anonymous = httpx.get(stack.url + "/v1/runs")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM
    assert anonymous.json()["type"] == "urn:warden:problem:unauthorized"
    forged = httpx.get(stack.url + "/v1/runs", headers={"Authorization": "Bearer wdn_abc_def"})
    assert forged.status_code == 401


def test_governed_call_over_http(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = _open(bot)
    read = _act(bot, run_id, "get_order", {"order_id": "o1"})
    assert read["status"] == "allowed" and read["result"]["customer_id"] == "c1"
    write = _act(bot, run_id, "save", {"key": "a", "value": 1})
    assert write["status"] == "allowed"
    bad = _act(bot, run_id, "save", {"key": 3})
    assert bad["status"] == "failed" and bad["kind"] == "schema_error"
    assert {e["path"] for e in bad["errors"]} == {"key", "value"}
    ghost = _act(bot, run_id, "teleport", {})
    assert ghost["status"] == "denied" and ghost["kind"] == "unknown_tool"
    pending = _act(bot, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 500.0})
    assert pending["status"] == "pending" and pending["role"] == "lead"
    assert stack.effect_count("saved") == 1 and stack.effect_count("paid") == 0
    finished = bot.post(f"/v1/runs/{run_id}/finish", json={"outcome": "completed"})
    assert finished.status_code == 200 and finished.json()["status"] == "finished"
    again = bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "get_order", "args": {"order_id": "o1"}}
    )
    assert again.status_code == 409 and again.json()["type"] == "urn:warden:problem:run-finished"


def test_runaway_detection_spans_requests(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = _open(bot)
    statuses = [_act(bot, run_id, "get_order", {"order_id": "o1"})["status"] for _ in range(3)]
    assert statuses == ["allowed", "allowed", "denied"]


def _requested_ids(stack: Stack, run_id: str) -> list[str]:
    events = stack.client("audit").get(f"/v1/ledger/runs/{run_id}/events").json()["items"]
    return [e["payload"]["action_id"] for e in events if e["type"] == "action_requested"]


def test_max_steps_and_action_ids_hold_across_requests(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = _open(bot)
    answers = [_act(bot, run_id, "get_order", {"order_id": f"o{i}"}) for i in range(52)]
    assert [a["status"] for a in answers[:50]] == ["allowed"] * 50
    assert answers[50]["status"] == "denied" and answers[50]["kind"] == "max_steps"
    assert answers[51]["status"] == "denied" and answers[51]["kind"] == "runaway"
    assert _requested_ids(stack, run_id) == [f"{run_id}.{i}" for i in range(1, 53)]
    assert bot.get(f"/v1/runs/{run_id}").json()["steps"] == 52


COUNTED = SPEC.replace(
    "policies:\n",
    """policies:
  - name: forty_lookups_at_most
    when: tool.name == "get_order" && run.counts["get_order"] > 40
    effect: deny
    reason: at most 40 lookups per run
""",
    1,
)


def test_overlapping_calls_of_one_run_get_distinct_steps(make_stack: Any) -> None:
    """Parallel tool calls of one run: every call takes its own step and is counted."""
    stack = make_stack(COUNTED)
    bot = stack.client("bot")
    run_id = _open(bot)

    def calls(worker: int) -> list[dict[str, Any]]:
        with stack.client_for(stack.keys["bot"]) as own:
            return [_act(own, run_id, "get_order", {"order_id": f"w{worker}-{i}"}) for i in range(5)]

    with ThreadPoolExecutor(8) as pool:
        results = [a for got in pool.map(calls, range(8)) for a in got]
    answered = [a["action_id"] for a in results]
    statuses = {a["status"] for a in results}
    expected = {f"{run_id}.{i}" for i in range(1, 41)}
    assert sorted(answered) == sorted(expected)
    assert sorted(_requested_ids(stack, run_id)) == sorted(expected)
    assert bot.get(f"/v1/runs/{run_id}").json()["steps"] == 40
    # The per-tool counts of overlapping calls were merged, not overwritten: all 40 were
    # allowed and the rule sees the 41st lookup as the 41st.
    assert statuses == {"allowed"}
    over = _act(bot, run_id, "get_order", {"order_id": "over"})
    assert over["status"] == "denied" and over["rules"] == ["forty_lookups_at_most"]


def test_approval_flow_through_the_api(stack: Stack) -> None:
    bot, lead = stack.client("bot"), stack.client("lead")
    run_id = _open(bot)
    pending = _act(bot, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0})
    assert pending["status"] == "pending" and pending["reasons"] == ["big payment"]
    assert pending["rules"] == ["big_pay_needs_approval"]
    queue = lead.get("/v1/approvals", params={"state": "pending", "role": "lead"}).json()["items"]
    assert [a["approval_id"] for a in queue] == [pending["approval_id"]]
    item = queue[0]
    assert item["reasons"] == ["big payment"] and item["risk"] == 0.5
    assert item["evidence"]["facts"]["order"]["customer_id"] == "c1"
    assert item["deadline"] > item["created_at"]
    assert lead.get("/v1/approvals", params={"role": "manager"}).json()["items"] == []
    decided = lead.post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "approve", "rationale": "known customer"},
    )
    assert decided.status_code == 200 and decided.json()["decided_by"] == "key:lead"
    twice = lead.post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "reject", "rationale": "changed my mind"},
    )
    assert twice.status_code == 409
    first = bot.post(f"/v1/approvals/{pending['approval_id']}/execute").json()
    second = bot.post(f"/v1/approvals/{pending['approval_id']}/execute").json()
    assert first["status"] == "allowed" and not first["replayed"]
    assert second["status"] == "allowed" and second["replayed"]
    assert stack.effect_count("paid") == 1


def test_queue_shows_and_filters_by_sla_class(make_stack: Any) -> None:
    stack = make_stack(SLA_SPEC)
    bot, lead = stack.client("bot"), stack.client("lead")
    run_id = _open(bot)
    pay = {"order_id": "o1", "customer_id": "c1"}
    routine = _act(bot, run_id, "pay", {**pay, "amount": 250.0})["approval_id"]
    urgent = _act(bot, run_id, "pay", {**pay, "amount": 5000.0})["approval_id"]
    queue = lead.get("/v1/approvals").json()["items"]
    assert [(a["approval_id"], a["sla_class"]) for a in queue] == [
        (urgent, "urgent"),
        (routine, "routine"),
    ]
    only = lead.get("/v1/approvals", params={"sla_class": "routine"}).json()["items"]
    assert [a["approval_id"] for a in only] == [routine]


REVIEWED_DOCS = SPEC.replace(
    "policies:\n",
    """policies:
  - name: documents_are_reviewed
    when: tool.name == "get_doc"
    effect: require_approval
    reason: documents are reviewed first
    approvers: lead
""",
    1,
)


def test_what_an_approved_action_reads_taints_the_runs_next_call(make_stack: Any) -> None:
    """The output of an action executed after approval counts for the run's provenance."""
    stack = make_stack(REVIEWED_DOCS)
    bot, lead = stack.client("bot"), stack.client("lead")
    run_id = _open(bot)
    pending = _act(bot, run_id, "get_doc", {"doc_id": "d1"})
    assert pending["status"] == "pending"
    decided = lead.post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "approve", "rationale": "fine"},
    )
    assert decided.status_code == 200, decided.text
    done = bot.post(f"/v1/approvals/{pending['approval_id']}/execute").json()
    assert done["status"] == "allowed" and "mallory@evil.example" in done["result"]["text"]
    sent = _act(bot, run_id, "message", {"to": "mallory@evil.example", "body": "invoice"})
    assert sent["status"] == "pending", sent
    assert sent["reasons"] == ["recipient came from untrusted text"]


def test_separation_of_duties(stack: Stack) -> None:
    admin = stack.client("acme-admin")
    run = admin.post(
        "/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "self-serve"}
    ).json()
    pending = _act(
        admin, run["run_id"], "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0}
    )
    own = admin.post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "approve", "rationale": "trust me"},
    )
    assert own.status_code == 409 and "cannot approve" in own.json()["detail"]
    agent_tries = stack.client("bot").post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "approve", "rationale": "me too"},
    )
    assert agent_tries.status_code == 403


def test_edit_is_reevaluated(stack: Stack) -> None:
    bot, lead = stack.client("bot"), stack.client("lead")
    run_id = _open(bot)
    pending = _act(bot, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0})
    url = f"/v1/approvals/{pending['approval_id']}/decision"
    denied = lead.post(
        url,
        json={
            "decision": "approve",
            "rationale": "x",
            "args": {"order_id": "o-bob", "customer_id": "c1", "amount": 5.0},
        },
    )
    assert denied.status_code == 409 and "denied by policy" in denied.json()["detail"]
    malformed = lead.post(
        url, json={"decision": "approve", "rationale": "x", "args": {"amount": "many"}}
    )
    assert malformed.status_code == 409 and "do not fit" in malformed.json()["detail"]
    ok = lead.post(
        url,
        json={
            "decision": "approve",
            "rationale": "partial",
            "args": {"order_id": "o1", "customer_id": "c1", "amount": 40.0},
        },
    )
    assert ok.status_code == 200 and ok.json()["args"]["amount"] == 40.0


def _event_count(stack: Stack) -> int:
    audit = stack.client("root")
    return int(audit.get("/v1/ledger/verify", params={"tenant": "acme"}).json()["events"])


def test_bad_input_is_4xx_problem_json_and_changes_nothing(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = _open(bot)
    before = _event_count(stack)
    cases = [
        bot.post(
            f"/v1/runs/{run_id}/actions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        bot.post(f"/v1/runs/{run_id}/actions", json={"tool": "save", "args": {}, "surprise": 1}),
        bot.post(f"/v1/runs/{run_id}/actions", json={"tool": 5, "args": []}),
        bot.post(
            f"/v1/runs/{run_id}/actions", json={"tool": "save", "args": {"blob": "x" * 100_000}}
        ),
        bot.post("/v1/runs/run_nope/actions", json={"tool": "save", "args": {}}),
        bot.get("/v1/approvals/apr_nope"),
        bot.post("/v1/runs", json={"workflow": "nope", "agent": "bot", "task": "x"}),
        # an agent the spec does not declare (an admin key: the bot's key is bound to "bot")
        stack.client("acme-admin").post(
            "/v1/runs", json={"workflow": "shop", "agent": "stranger", "task": "x"}
        ),
        bot.get("/v1/nothing-here"),
    ]
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 422, 422, 413, 404, 404, 404, 409, 404], [r.text for r in cases]
    for r in cases:
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].startswith("urn:warden:problem:")
    assert _event_count(stack) == before


def test_tenant_isolation_on_every_endpoint(stack: Stack) -> None:
    bot, lead = stack.client("bot"), stack.client("lead")
    run_id = _open(bot)
    pending = _act(bot, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0})
    approval = pending["approval_id"]
    outsiders = [stack.client(k) for k in ("other-bot", "other-lead", "other-audit")]
    for client in outsiders:
        attempts = [
            client.get(f"/v1/runs/{run_id}"),
            client.post(
                f"/v1/runs/{run_id}/actions", json={"tool": "get_order", "args": {"order_id": "o1"}}
            ),
            client.post(f"/v1/runs/{run_id}/finish", json={"outcome": "completed"}),
            client.get(f"/v1/approvals/{approval}"),
            client.get(f"/v1/approvals/{approval}/wait", params={"timeout_s": 0}),
            client.post(
                f"/v1/approvals/{approval}/decision", json={"decision": "approve", "rationale": "x"}
            ),
            client.post(f"/v1/approvals/{approval}/execute"),
            client.get(f"/v1/ledger/runs/{run_id}/events"),
            client.get("/v1/ledger/verify", params={"tenant": "acme"}),
            client.get("/v1/ledger/export", params={"tenant": "acme"}),
            client.get("/v1/costs", params={"tenant": "acme"}),
            client.post(
                "/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "x", "tenant": "acme"}
            ),
            client.post(
                "/v1/switches",
                json={"scope": "tenant", "target": "acme", "active": True, "reason": "x"},
            ),
        ]
        for r in attempts:
            assert r.status_code in (403, 404), (r.request.url, r.status_code, r.text)
        assert client.get("/v1/runs", params={"tenant": "acme"}).json()["items"] == []
        assert client.get("/v1/approvals", params={"tenant": "acme"}).json()["items"] == []
        listed = client.get("/v1/runs").json()["items"]
        assert all(r["tenant"] == "globex" for r in listed)
    assert lead.get(f"/v1/approvals/{approval}").json()["state"] == "pending"
    assert stack.effect_count("paid") == 0


def test_roles_limit_what_a_key_can_do(stack: Stack) -> None:
    audit, lead = stack.client("audit"), stack.client("lead")
    assert (
        audit.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "x"}).status_code
        == 403
    )
    assert (
        lead.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "x"}).status_code
        == 403
    )
    assert (
        lead.post(
            "/v1/switches", json={"scope": "tenant", "active": True, "reason": "x"}
        ).status_code
        == 403
    )
    assert audit.get("/v1/ledger/verify").json()["ok"] is True
    assert stack.client("bot").get("/v1/ledger/verify").status_code == 403


def test_switch_through_the_api(stack: Stack) -> None:
    bot, admin = stack.client("bot"), stack.client("acme-admin")
    run_id = _open(bot)
    flipped = admin.post(
        "/v1/switches", json={"scope": "tenant", "active": True, "reason": "incident 12"}
    )
    assert flipped.status_code == 200 and flipped.json()["target"] == "acme"
    global_try = admin.post("/v1/switches", json={"scope": "global", "active": True, "reason": "x"})
    assert global_try.status_code == 403
    killed = _act(bot, run_id, "get_order", {"order_id": "o1"})
    assert killed["status"] == "denied" and killed["kind"] == "killed"
    admin.post("/v1/switches", json={"scope": "tenant", "active": False, "reason": "resolved"})
    run2 = _open(bot)
    assert _act(bot, run2, "get_order", {"order_id": "o1"})["status"] == "allowed"


def test_revoked_key_is_refused(stack: Stack) -> None:
    import time

    from warden.auth import KeyStore
    from warden.store import Store

    store = Store(stack.store_url)
    keys = KeyStore(store)
    info, key = keys.create(
        name="temp", role="agent", tenant="acme", created_by="tests", agent="bot"
    )
    client = stack.client_for(key)
    assert client.get("/v1/runs").status_code == 200
    keys.revoke(info.key_id)
    store.dispose()
    time.sleep(0.3)  # the server trusts a verified key for key_cache_s (0.2 s here)
    assert client.get("/v1/runs").status_code == 401


def test_health_and_workflows(stack: Stack) -> None:
    assert httpx.get(stack.url + "/healthz").json() == {"status": "ok", "detail": None}
    assert httpx.get(stack.url + "/readyz").status_code == 200
    workflows = stack.client("audit").get("/v1/workflows").json()["items"]
    assert workflows[0]["name"] == "shop" and len(workflows[0]["fingerprint"]) == 64


def test_ledger_endpoints(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = _open(bot)
    _act(bot, run_id, "get_order", {"order_id": "o1"})
    events = stack.client("audit").get(f"/v1/ledger/runs/{run_id}/events").json()["items"]
    assert [e["type"] for e in events][:4] == [
        "run_started",
        "action_requested",
        "decision",
        "executed",
    ]
    export = stack.client("audit").get("/v1/ledger/export")
    assert export.status_code == 200 and len(export.text.splitlines()) >= 4


def test_rate_limit_per_key_is_decided_in_the_store(make_stack: Any) -> None:
    limited: Stack = make_stack(key_rate_limit=3)
    bot = limited.client("bot")
    # Ten requests take a few ms: at most one second boundary, so at most 6 are admitted.
    statuses = [bot.get("/v1/runs").status_code for _ in range(10)]
    assert statuses[:3] == [200, 200, 200] and statuses.count(429) >= 4
    refused = bot.get("/v1/runs")
    if refused.status_code == 429:
        assert refused.headers["content-type"] == PROBLEM and int(refused.headers["retry-after"]) >= 1
    assert limited.client("lead").get("/v1/approvals").status_code == 200  # another key, its own budget


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_store_outage_is_503_and_nothing_recorded_is_lost(make_stack: Any, store_url: str) -> None:
    """The database refuses connections for a while: calls get 503 problem+json, the
    server stays up, and afterwards every call answered before the outage is on the ledger."""
    stack = make_stack()
    bot = stack.client("bot")
    run_id = _open(bot)
    before = [_act(bot, run_id, "get_order", {"order_id": f"o{i}"})["action_id"] for i in range(3)]
    name = store_url.rsplit("/", 1)[1]
    admin = create_engine(store_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")

    def allow(on: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(on).lower()}'))
            if not on:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

    allow(False)
    try:
        down = bot.post(
            f"/v1/runs/{run_id}/actions", json={"tool": "get_order", "args": {"order_id": "x"}}
        )
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == PROBLEM
        assert down.json()["type"] == "urn:warden:problem:store-unavailable"
    finally:
        allow(True)
        admin.dispose()
    # Clients retry a 503; each process drops the dead connections it meets (a pool's
    # worth at most), so service resumes within a few attempts.
    def retried(method: str, client: httpx.Client, path: str, **kw: Any) -> httpx.Response:
        for _ in range(10):
            r = client.request(method, path, **kw)
            if r.status_code != 503:
                return r
            time.sleep(0.1)
        raise AssertionError(f"still 503 after 10 attempts: {r.text}")

    back = retried(
        "POST", bot, f"/v1/runs/{run_id}/actions",
        json={"tool": "get_order", "args": {"order_id": "back"}},
    )
    assert back.status_code == 200 and back.json()["status"] == "allowed", back.text
    audit = stack.client("audit")
    wanted = set(before) | {back.json()["action_id"]}
    deadline = time.time() + 15  # the ledger flusher retries with backoff
    while True:
        events = retried("GET", audit, f"/v1/ledger/runs/{run_id}/events").json()["items"]
        ids = {e["payload"]["action_id"] for e in events if e["type"] == "action_requested"}
        if wanted <= ids or time.time() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= ids
    assert retried("GET", audit, "/v1/ledger/verify").json()["ok"] is True


def _same_shape(value: Any) -> Any:
    """An answer with what differs between two runs of one script (ids, times) masked."""
    if isinstance(value, dict):
        return {k: "T" if k in ("deadline", "ms") else _same_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same_shape(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"apr_[0-9a-f]{20}", "APR", re.sub(r"run_[0-9a-f]{24}", "RUN", value))
    return value


def test_fast_path_answers_exactly_as_the_fastapi_route(make_stack: Any) -> None:
    """The governed call has a fast path (server._fastpath); the same script of requests,
    good and bad, gets the same answers with it and without it."""

    def script(stack: Stack) -> list[tuple[int, str, Any, str | None]]:
        bot = stack.client("bot")
        run_id, done_id = _open(bot), _open(bot)
        assert bot.post(f"/v1/runs/{done_id}/finish", json={"outcome": "completed"}).is_success
        good = {"tool": "get_order", "args": {"order_id": "o1"}}
        as_json = {"content-type": "application/json"}
        anonymous = httpx.Client(base_url=stack.url)
        stack.clients.append(anonymous)  # closed with the stack
        requests: list[tuple[httpx.Client, str, dict[str, Any]]] = [
            (bot, run_id, {"json": good}),
            (bot, run_id, {"json": {"tool": "save", "args": {"key": "k", "value": 1}}}),
            (bot, run_id, {"json": {"tool": "save", "args": {"key": 3}}}),
            (bot, run_id, {"json": {"tool": "teleport", "args": {}}}),
            (bot, run_id, {"json": {"tool": "pay", "args": {"order_id": "o1", "customer_id": "c1", "amount": 500.0}}}),
            (bot, run_id, {"json": {**good, "idempotency_key": "k-1"}}),
            (bot, run_id, {"json": {**good, "idempotency_key": "k-1"}}),
            (bot, run_id, {"content": b'{"tool": "get_order", "args": ', "headers": as_json}),
            (bot, run_id, {"json": {**good, "surprise": 1}}),
            (bot, run_id, {"json": {"tool": "get_order", "args": [1, 2]}}),
            (bot, run_id, {"json": [good]}),
            (bot, run_id, {"content": json.dumps(good), "headers": {"content-type": "text/plain"}}),
            (bot, run_id, {"json": {**good, "wait_s": 99}}),
            (anonymous, run_id, {"json": good}),
            (stack.client_for("wdn_nope_nope"), run_id, {"json": good}),
            (stack.client("audit"), run_id, {"json": good}),
            (stack.client("other-bot"), run_id, {"json": good}),
            (bot, "run_doesnotexist", {"json": good}),
            (bot, "bad!id", {"json": good}),
            (bot, done_id, {"json": good}),
        ]
        out = []
        for client, rid, kw in requests:
            r = client.post(f"/v1/runs/{rid}/actions", **kw)
            out.append(
                (r.status_code, r.headers["content-type"], _same_shape(r.json()), r.headers.get("www-authenticate"))
            )
        return out

    def has_fast_path(stack: Stack) -> bool:
        return any(m.cls is GovernedCallFastPath for m in stack.app.user_middleware)

    with_it, without = make_stack(), make_stack(fast_path=False)
    assert has_fast_path(with_it) and not has_fast_path(without)
    fast, plain = script(with_it), script(without)
    assert [a[0] for a in fast] == [200] * 7 + [400, 422, 422, 422, 422, 422, 401, 401, 403, 404, 404, 422, 409]
    assert fast == plain


# A rule on who sent the call: principal.key is the sending key's id over HTTP.
KEYED_SPEC = SPEC.replace(
    "limits:",
    """  - name: saves_need_a_key
    when: tool.name == "save" && (principal.key == null || run.opened_by != "key:bot")
    effect: deny
    reason: saves only through the bot's key
  - name: large_saves_after_risk
    when: tool.name == "save" && args.value > 5 && run.risk >= 0.5
    effect: deny
    reason: no large saves in a risky run
limits:""",
    1,
)


def test_principal_key_and_run_context_over_http(make_stack: Any) -> None:
    stack = make_stack(KEYED_SPEC)
    bot = stack.client("bot")
    run_id = _open(bot)
    saved = _act(bot, run_id, "save", {"key": "k", "value": 9})
    assert saved["status"] == "allowed"
    big = _act(bot, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0})
    assert big["status"] == "pending" and big["rules"] == ["big_pay_needs_approval"]
    # the run's risk (0.5 from the payment) is kept between calls served over HTTP
    after = _act(bot, run_id, "save", {"key": "k2", "value": 9})
    assert after["status"] == "denied" and after["rules"] == ["large_saves_after_risk"]
