"""Incremental export: ``GET /v1/ledger/export?after=CURSOR`` in pages, and
``warden ledger export --cursor-file / --follow``; what they write verifies offline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _inproc import Api, act, open_run
from _inproc import serve as serve  # the fixture
from typer.testing import CliRunner

from warden import Gateway
from warden.errors import UsageError
from warden.ledger import OtlpLogSink, export_page, generate_key, iter_events
from warden.ledger._writer import _Buffered, write_events
from warden.store import Store

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    from warden.cli._app import app

    done = runner.invoke(app, list(args))
    return done.exit_code, done.output


async def _record(gateway: Gateway, tenant: str, n: int = 2) -> str:
    async with gateway.run(tenant=tenant, agent="bot", task="export me") as run:
        for i in range(n):
            await run.call("save", {"key": f"k{i}", "value": i})
    gateway.flush()
    return run.run_id


async def _pages(client: httpx.AsyncClient, limit: int, **params: str) -> tuple[list[Any], str]:
    """Every page from the beginning to the end; the events and the last cursor."""
    events: list[Any] = []
    after = ""
    while True:
        r = await client.get("/v1/ledger/export", params={"after": after, "limit": limit, **params})
        assert r.status_code == 200, r.text
        page = [json.loads(line) for line in r.text.splitlines()]
        assert r.headers["warden-events"] == str(len(page))
        assert f"after={r.headers['warden-next-cursor']}" in r.headers["link"]
        events += page
        nxt = r.headers["warden-next-cursor"]
        if not page:
            return events, nxt
        after = nxt


async def test_pages_concatenated_are_the_full_export_in_commit_order(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    for _ in range(3):
        run_id = await open_run(bot)
        for i in range(3):
            await act(bot, run_id, "save", {"key": f"k{i}", "value": i})
    api.flush()
    audit = api.as_("a", "auditor")
    events, cursor = await _pages(audit, limit=4)
    full = [json.loads(line) for line in (await audit.get("/v1/ledger/export")).text.splitlines()]
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in full)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # Nothing new: the cursor stays where it is and the page is empty.
    r = await audit.get("/v1/ledger/export", params={"after": cursor})
    assert (r.text, r.headers["warden-next-cursor"]) == ("", cursor)


async def test_a_cursor_means_the_same_on_another_replica(serve: Callable[..., Any]) -> None:
    one: Api = await serve()
    bot = one.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    await act(bot, run_id, "save", {"key": "k", "value": 1})
    one.flush()
    two: Api = await serve()  # another process on the same store
    key = one.key("a", "auditor")
    r1 = await one.client(key).get("/v1/ledger/export", params={"after": "", "limit": 2})
    cursor = r1.headers["warden-next-cursor"]
    a = await one.client(key).get("/v1/ledger/export", params={"after": cursor, "limit": 50})
    b = await two.client(key).get("/v1/ledger/export", params={"after": cursor, "limit": 50})
    assert a.text == b.text != ""
    assert a.headers["warden-next-cursor"] == b.headers["warden-next-cursor"]


async def test_a_tenant_key_pages_through_its_own_events_only(serve: Callable[..., Any]) -> None:
    api: Api = await serve()
    for tenant in ("acme", "globex"):
        bot = api.as_(f"b-{tenant}", "agent", tenant, agent="bot")
        run_id = await open_run(bot)
        await act(bot, run_id, "save", {"key": "k", "value": 1})
    api.flush()
    events, _cursor = await _pages(api.as_("a", "auditor", "acme"), limit=2)
    assert events
    assert {e["tenant"] for e in events} == {"acme"}
    r = await api.as_("a2", "auditor", "acme").get(
        "/v1/ledger/export", params={"after": "", "tenant": "globex"}
    )
    assert r.status_code == 403
    r = await api.as_("g", "agent", "acme", agent="bot").get(
        "/v1/ledger/export", params={"after": ""}
    )
    assert r.status_code == 403


async def test_incremental_cli_export_verifies_offline_with_checkpoints(
    gateway: Gateway, tmp_path: Path
) -> None:
    key = tmp_path / "ledger.key"
    generate_key(key)
    out, cursor = tmp_path / "events.jsonl", tmp_path / "cursor"
    incremental = (
        "ledger", "export", "--store", gateway.store.url, "--out", str(out),
        "--cursor-file", str(cursor), "--key", str(key),
    )  # fmt: skip
    gateway.switches.set("tenant", "t2", active=True, by="ops", reason="drill")
    await _record(gateway, "t1")
    code, text = cli(*incremental)
    assert code == 0, text
    first = out.read_text().splitlines()
    assert first
    await _record(gateway, "t2")
    await _record(gateway, "t1")
    code, text = cli(*incremental)
    assert code == 0, text
    lines = out.read_text().splitlines()
    assert lines[: len(first)] == first  # appended, not rewritten
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(set(ids))  # no event twice
    assert len(ids) == len(list(iter_events(gateway.store)))
    code, text = cli(
        "ledger", "verify", "--export", str(out), "--checkpoints", f"{out}.checkpoints",
        "--public-key", f"{key}.pub",
    )  # fmt: skip
    assert code == 0, text
    assert "ledger verified" in text and "pinned" in text
    code, text = cli(*incremental)  # nothing new: nothing written
    assert (code, out.read_text().splitlines()) == (0, lines)


def test_a_cursor_file_that_holds_no_cursor_fails_with_one_line(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'w.db'}"
    Store(store).dispose()
    (tmp_path / "cursor").write_text("yesterday\n")
    code, text = cli(
        "ledger", "export", "--store", store, "--out", str(tmp_path / "o"),
        "--cursor-file", str(tmp_path / "cursor"),
    )  # fmt: skip
    assert code == 1
    assert "not a ledger export cursor" in text
    assert not (tmp_path / "o").exists()


def test_follow_prints_new_events_and_resumes_from_its_cursor(
    gateway: Gateway, tmp_path: Path
) -> None:
    if not gateway.store.is_sqlite:
        pytest.skip("the subprocess part is the same on both backends")
    cursor = tmp_path / "cursor"
    cmd = [
        sys.executable, "-m", "warden", "ledger", "export", "--store", gateway.store.url,
        "--follow", "--interval", "0.1", "--cursor-file", str(cursor),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    asyncio.run(_record(gateway, "t1"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        seen: list[dict[str, Any]] = []
        n_before = len(list(iter_events(gateway.store)))
        while len(seen) < n_before:
            seen.append(json.loads(proc.stdout.readline()))
        run_id = asyncio.run(_record(gateway, "t1"))  # appears while it follows
        n_run = len(list(iter_events(gateway.store, run_id=run_id)))
        while len(seen) < n_before + n_run:
            seen.append(json.loads(proc.stdout.readline()))
        assert {e["run_id"] for e in seen[n_before:]} == {run_id}
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # resumed: a second run from the saved cursor prints only what came after
    asyncio.run(_record(gateway, "t1"))
    once = [c for c in cmd if c not in ("--follow", "--interval", "0.1")]
    done = subprocess.run(once, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    resumed = [json.loads(line) for line in done.stdout.splitlines()]
    assert resumed and min(e["id"] for e in resumed) > max(e["id"] for e in seen)


@pytest.mark.postgres
def test_a_page_never_passes_an_append_that_has_not_committed(pg_url: str) -> None:
    """PostgreSQL hands out ids before commit: an append holding a lower id while a later
    one commits must not be skipped by a cursor that moved past it."""
    store = Store(pg_url)
    try:
        with store.write() as conn:
            conn.exec_driver_sql("TRUNCATE ledger_events, ledger_heads RESTART IDENTITY")
        slow_inserted, release = threading.Event(), threading.Event()

        def slow() -> None:
            with store.write() as conn:
                write_events(store, conn, [_event("slow")])
                slow_inserted.set()
                release.wait(30)

        thread = threading.Thread(target=slow)
        thread.start()
        assert slow_inserted.wait(30)
        with store.write() as conn:
            write_events(store, conn, [_event("fast")])  # a higher id, committed first
        page = export_page(store, after="", limit=100, attempts=3)
        assert ([e.stream for e in page.events], page.busy, page.next) == ([], True, "0")
        release.set()
        thread.join(30)
        page = export_page(store, after=page.next, limit=100)
        assert [e.stream for e in page.events] == ["slow", "fast"]
    finally:
        store.dispose()


def _event(stream: str) -> _Buffered:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return _Buffered(stream, "t1", None, ts, "switch_changed", "{}")


# -- OTLP logs ---------------------------------------------------------------------------


class _Receiver:
    """An OTLP/HTTP logs receiver on loopback: what a collector would get."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        self.records: list[dict[str, Any]] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                received.paths.append(self.path)
                for resource_logs in request.resource_logs:
                    service = {
                        a.key: a.value.string_value for a in resource_logs.resource.attributes
                    }.get("service.name")
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            received.records.append(
                                {
                                    "service": service,
                                    "event_name": record.event_name,
                                    "severity": record.severity_text,
                                    "attributes": {
                                        a.key: a.value.string_value for a in record.attributes
                                    },
                                    "body": _any_value(record.body),
                                }
                            )
                reply = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


@pytest.fixture
def receiver() -> Any:
    made = _Receiver()
    yield made
    made.close()


async def test_ledger_events_reach_an_otlp_receiver_as_log_records(
    receiver: _Receiver, serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    # The endpoint turns traces on too (docs/telemetry.md); this receiver takes logs only.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "warden-test")
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    await act(bot, run_id, "save", {"key": "k", "value": 7})
    r = await bot.post(f"/v1/runs/{run_id}/finish", json={"outcome": "completed"})
    assert r.status_code == 200, r.text
    (sink,) = [s for s in api.app.state.warden.sinks if isinstance(s, OtlpLogSink)]
    sink.flush()
    mine = [rec for rec in receiver.records if rec["attributes"]["warden.run_id"] == run_id]
    names = [rec["event_name"] for rec in mine]
    assert names[0] == "warden.run_started"
    assert "warden.decision" in names and "warden.executed" in names
    assert receiver.paths and set(receiver.paths) == {"/v1/logs"}
    started = mine[0]
    assert (started["service"], started["attributes"]["warden.tenant"]) == ("warden-test", "acme")
    assert started["attributes"]["warden.workflow"] == "shop"
    executed = next(rec for rec in mine if rec["event_name"] == "warden.executed")
    assert executed["body"]["result"]["saved"] == "k"
    # the same events the ledger holds, in the same order
    api.flush()
    ledger = [f"warden.{e.type}" for e in iter_events(api.app.state.warden.store, run_id=run_id)]
    assert names == ledger
    assert names[-1] == "warden.run_finished"


async def test_no_otlp_sink_without_otel_variables(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                 "OTEL_LOGS_EXPORTER"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    api: Api = await serve()
    assert not [s for s in api.app.state.warden.sinks if isinstance(s, OtlpLogSink)]


def test_otel_logs_exporter_variable_decides() -> None:
    from warden.ledger import otlp_logs_enabled

    assert not otlp_logs_enabled({})
    assert otlp_logs_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not otlp_logs_enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_LOGS_EXPORTER": "none"}
    )
    assert otlp_logs_enabled({"OTEL_LOGS_EXPORTER": "otlp"})
    assert not otlp_logs_enabled({"OTEL_LOGS_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    with pytest.raises(UsageError, match="otlp or none"):
        otlp_logs_enabled({"OTEL_LOGS_EXPORTER": "console"})


def test_the_collector_recipe_wires_otlp_logs_to_splunk_and_datadog() -> None:
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "docs" / "otel-collector.yaml").read_text())
    logs = config["service"]["pipelines"]["logs"]
    assert logs["receivers"] == ["otlp"]
    assert set(logs["exporters"]) == {"splunk_hec", "datadog"} <= set(config["exporters"])
    assert set(logs["processors"]) <= set(config["processors"])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_a_full_otlp_queue_drops_and_counts_instead_of_blocking_the_call() -> None:

    release, taken = threading.Event(), threading.Event()
    emitted: list[str] = []

    class SlowCollectorLogger:  # the SDK's logger, stuck behind a slow export
        def emit(self, **record: Any) -> None:
            taken.set()
            release.wait(30)
            emitted.append(record["event_name"])

    class Provider:
        def get_logger(self, name: str) -> SlowCollectorLogger:
            return SlowCollectorLogger()

        def force_flush(self, timeout_ms: int) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    sink = OtlpLogSink(Provider(), max_queue=1)
    sink.emit("r", "t", "run_started", {"workflow": "w"}, None)
    assert taken.wait(30)  # the sink's thread holds the first event
    sink.emit("r", "t", "decision", {}, None)  # queued
    sink.emit("r", "t", "executed", {}, None)  # the queue is full: dropped, not waited for
    assert sink.dropped == 1
    release.set()
    assert sink.flush()
    assert emitted == ["warden.run_started", "warden.decision"]
    sink.close()


def test_incremental_export_from_a_server_with_the_cli(
    make_stack: Callable[..., Any], tmp_path: Path
) -> None:
    key = tmp_path / "ledger.key"
    generate_key(key)
    stack = make_stack(ledger_key=str(key))
    bot = stack.client("bot")

    def a_run() -> None:
        run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"})
        rid = run_id.json()["run_id"]
        bot.post(f"/v1/runs/{rid}/actions", json={"tool": "save", "args": {"key": "k", "value": 1}})
        bot.post(f"/v1/runs/{rid}/finish", json={"outcome": "completed"})

    out, cursor = tmp_path / "events.jsonl", tmp_path / "cursor"
    follow = (
        "ledger", "export", "--url", stack.url, "--api-key", stack.keys["root"],
        "--cursor-file", str(cursor), "--out", str(out),
    )  # fmt: skip
    a_run()
    code, text = cli(*follow)
    assert code == 0, text
    first = out.read_text().splitlines()
    a_run()
    code, text = cli(*follow)
    assert code == 0, text
    lines = out.read_text().splitlines()
    assert len(lines) > len(first) and lines[: len(first)] == first
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(set(ids))
    code, text = cli(
        "ledger", "verify", "--export", str(out), "--checkpoints", f"{out}.checkpoints",
        "--public-key", f"{key}.pub",
    )  # fmt: skip
    assert code == 0, text
    assert "signed checkpoint" in text
    # a tenant's auditor exports its tenant; checkpoints are not for its key
    mine = tmp_path / "acme.jsonl"
    code, text = cli(
        "ledger", "export", "--url", stack.url, "--api-key", stack.keys["audit"],
        "--cursor-file", str(tmp_path / "c2"), "--out", str(mine),
    )  # fmt: skip
    assert code == 0, text
    assert "checkpoints need an all-tenant key" in text
    assert {json.loads(line)["tenant"] for line in mine.read_text().splitlines()} == {"acme"}
    # a key that may not export at all: one line, exit 1
    code, text = cli(
        "ledger", "export", "--url", stack.url, "--api-key", stack.keys["bot"],
        "--cursor-file", str(tmp_path / "c3"),
    )  # fmt: skip
    assert code == 1 and "403" in text


def test_an_interrupt_after_the_lines_are_out_still_saves_their_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between writing a poll's lines and saving its cursor (seen as a flaky
    resume in CI): the cursor of what was written is saved, so a resume does not print
    those lines again."""
    from warden.cli import _follow

    class Pages:
        def checkpoints(self) -> list[Any]:
            return []

        def page(self, cursor: str) -> tuple[list[str], str]:
            return (["{}\n", "{}\n"], "2") if cursor == "" else ([], cursor)

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_follow, "merge_into_file", interrupted)  # right after the flush
    out, cursor = tmp_path / "export.jsonl", tmp_path / "cursor"
    _follow.follow_export(Pages(), out, tmp_path / "cp.jsonl", cursor, True, 0.05)
    assert out.read_text().count("\n") == 2
    assert cursor.read_text().strip() == "2"
