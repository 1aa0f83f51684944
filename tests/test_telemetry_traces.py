"""OpenTelemetry traces of runs and governed calls (issue 10 §1): span names and
hierarchy, the decision/approval attributes, joining the agent's trace in process and over
HTTP, and a real ``warden serve`` exporting OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stack import free_port
from conftest import SPEC, Effects, make_gateway
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_server_identity import PAY_300, _act, _open

from warden import Allowed, Denied, Gateway, Pending
from warden.auth import KeyStore
from warden.remote import RemoteGateway
from warden.server import ServerSettings, create_app
from warden.telemetry import SpanBatcher, Telemetry, instrument, run_context, traceparent

TESTS = Path(__file__).parent
EXAMPLE = TESTS.parent / "examples" / "refund_triage"


class Traced:
    """A gateway with its spans going to memory."""

    def __init__(self, gateway: Gateway) -> None:
        self.exporter = InMemorySpanExporter()
        self.batcher = SpanBatcher(self.exporter, schedule_delay_s=60)
        self.telemetry = instrument(gateway, traces=self.batcher)
        self.gateway = gateway

    def spans(self) -> list[ReadableSpan]:
        self.batcher.force_flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


@pytest.fixture
def traced(store_url: str, effects: Effects) -> Iterator[Traced]:
    gateway = make_gateway(store_url, effects)
    made = Traced(gateway)
    yield made
    made.telemetry.close()
    gateway.close()


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_run_is_an_invoke_agent_span_with_a_child_per_call(traced: Traced) -> None:
    async with traced.gateway.run(tenant="acme", agent="bot", task="t") as run:
        read = await run.call("get_order", {"order_id": "o1"})
        paid = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 50.0})
        big = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 250.0})
        gone = await run.call("remove", {"key": "k"})
    assert isinstance(read, Allowed) and isinstance(paid, Allowed)
    assert isinstance(big, Pending) and isinstance(gone, Denied)

    (root,) = traced.named("invoke_agent bot")
    assert root.parent is None
    assert root.context.span_id == run_context(run.run_id).span_id
    assert _attrs(root) | {"warden.run.outcome": "completed", "warden.run.steps": 4} == _attrs(root)
    assert _attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    assert _attrs(root)["gen_ai.conversation.id"] == run.run_id

    calls = [s for s in traced.spans() if s.name.startswith("execute_tool ")]
    assert [s.name for s in calls] == [
        "execute_tool get_order",
        "execute_tool pay",
        "execute_tool pay",
        "execute_tool remove",
    ]
    for span in calls:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        attrs = _attrs(span)
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.call.id"].startswith(run.run_id)
        assert attrs["warden.run.id"] == run.run_id
        assert "args" not in " ".join(attrs)  # ids, names and decisions only

    small, large, removed = (_attrs(s) for s in calls[1:])
    assert small["warden.decision.effect"] == "allow"
    assert small["warden.decision.rules"] == ("pay_alone_up_to_100",)
    assert small["warden.outcome"] == "executed"
    assert large["warden.decision.effect"] == "require_approval"
    assert large["warden.decision.risk"] == 0.5
    assert (large["warden.outcome"], large["warden.approval.id"]) == ("pending", big.approval_id)
    assert large["warden.approval.role"] == "lead"
    assert removed["warden.decision.effect"] == "deny"
    assert removed["warden.decision.rules"] == ("default:delete",)
    assert (removed["warden.outcome"], removed["warden.denied.kind"]) == ("denied", "policy_block")


async def test_stages_that_did_work_are_child_spans(traced: Traced) -> None:
    async with traced.gateway.run(tenant="acme", agent="bot", task="t") as run:
        await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 50.0})
        await run.call("get_doc", {"doc_id": "d"})
    pay = traced.named("execute_tool pay")[0]
    doc = traced.named("execute_tool get_doc")[0]
    children = {
        s.name: s for s in traced.spans() if s.parent and s.parent.span_id == pay.context.span_id
    }
    # the policy looked the order up (a fact); the payment ran once, under its key
    assert set(children) == {"warden.policy", "warden.idempotency"}
    assert _attrs(children["warden.policy"])["warden.facts"] == ("order",)
    assert _attrs(pay)["warden.execute.attempts"] == 1
    assert _attrs(pay)["warden.execute.ms"] >= 0
    for child in children.values():
        times = (pay.start_time, child.start_time, child.end_time, pay.end_time)
        assert None not in times and list(times) == sorted(times)  # type: ignore[type-var]
    doc_children = [
        s.name for s in traced.spans() if s.parent and s.parent.span_id == doc.context.span_id
    ]
    assert doc_children == []  # a read without facts, run once: the call span alone


async def test_a_retried_tool_has_an_execute_span(store_url: str) -> None:
    from warden.spec import load_spec_text
    from warden.testing import FakeTool

    flaky = FakeTool("flaky", params={"q": str}, returns={"ok": True}, fail_times=2)
    spec = load_spec_text(
        'name: fakes\nversion: "1"\nowner: t\ntier: autonomous\ntools:\n'
        "  flaky: {retry: {max_attempts: 3, backoff: 1ms}}\n"
        "limits: {max_retries_per_tool: 5}\n"
    )
    gateway = Gateway(spec, [flaky.fn], store=store_url)
    traced = Traced(gateway)
    try:
        async with gateway.run(tenant="t", agent="a", task="retry") as run:
            assert isinstance(await run.call("flaky", {"q": "x"}), Allowed)
        (call,) = traced.named("execute_tool flaky")
        (execute,) = traced.named("warden.execute")
        assert execute.parent is not None and execute.parent.span_id == call.context.span_id
        attrs = _attrs(execute)
        assert (attrs["warden.execute.attempts"], attrs["warden.execute.retries"]) == (3, 2)
    finally:
        traced.telemetry.close()
        gateway.close()


async def test_calls_join_the_callers_current_trace(traced: Traced) -> None:
    agent_exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(agent_exporter))
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("agent turn") as turn:
        async with traced.gateway.run(tenant="acme", agent="bot", task="t") as run:
            await run.call("get_order", {"order_id": "o1"})
    (call,) = traced.named("execute_tool get_order")
    (root,) = traced.named("invoke_agent bot")
    agent = turn.get_span_context()
    assert call.context.trace_id == root.context.trace_id == agent.trace_id
    assert call.parent is not None and call.parent.span_id == agent.span_id
    assert root.parent is not None and root.parent.span_id == agent.span_id
    assert [link.context.span_id for link in call.links] == [root.context.span_id]
    assert root.context.span_id == run_context(run.run_id).span_id


async def test_a_traceparent_names_the_parent_and_unsampled_is_not_recorded(
    traced: Traced,
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    run = traced.gateway.open_run(tenant="acme", agent="bot", task="t")
    with traceparent(f"00-{trace_id}-{parent_id}-01"):
        await run.call("get_order", {"order_id": "o1"})
    with traceparent(f"00-{trace_id}-{parent_id}-00"):  # the agent's trace is not sampled
        await run.call("get_order", {"order_id": "o2"})
    with traceparent("garbage"):  # ignored: the call is a child of its run
        await run.call("get_order", {"order_id": "o3"})
    run.finish()
    first, third = traced.named("execute_tool get_order")
    assert f"{first.context.trace_id:032x}" == trace_id
    assert first.parent is not None and f"{first.parent.span_id:016x}" == parent_id
    assert third.parent is not None
    assert third.parent.span_id == run_context(run.run_id).span_id


async def test_an_approval_wait_and_the_resumed_execution(traced: Traced) -> None:
    gateway = traced.gateway
    async with gateway.run(tenant="acme", agent="bot", task="t") as run:
        call = asyncio.create_task(
            run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 250.0}, wait=30)
        )
        while not gateway.approvals.list(state="pending"):
            await asyncio.sleep(0.01)
        (approval,) = gateway.approvals.list(state="pending")
        await gateway.approve(
            approval.approval_id, approver="lead@x", roles=["lead"], rationale="fine"
        )
        result = await call
    assert isinstance(result, Allowed)
    asked, executed = traced.named("execute_tool pay")
    assert _attrs(asked)["warden.outcome"] == "pending"
    assert _attrs(executed)["warden.outcome"] == "executed"
    assert _attrs(executed)["warden.approval.id"] == approval.approval_id
    assert _attrs(executed)["warden.approval.state"] == "approved"
    assert _attrs(executed)["warden.approval.wait_s"] >= 0
    assert [link.context.span_id for link in executed.links] == [asked.context.span_id]
    (wait,) = traced.named("warden.approval.wait")
    assert wait.parent is not None and wait.parent.span_id == asked.context.span_id
    assert _attrs(wait)["warden.approval.id"] == approval.approval_id
    assert _attrs(wait)["warden.approval.wait_s"] > 0


async def test_a_kill_switch_and_a_failure_are_marked(store_url: str, effects: Effects) -> None:
    gateway = make_gateway(store_url, effects)
    traced = Traced(gateway)
    try:
        gateway.switches.set("tool", "save", active=True, by="ops", reason="incident")
        async with gateway.run(tenant="acme", agent="bot", task="t") as run:
            killed = await run.call("save", {"key": "a", "value": 1})
            gateway.switches.set("tool", "save", active=False, by="ops", reason="resolved")
            await run.call("save", {"key": 1})
        assert isinstance(killed, Denied)
        first, second = (_attrs(s) for s in traced.named("execute_tool save"))
        assert first["warden.kill_switch"] is True and first["warden.denied.kind"] == "killed"
        assert (second["warden.outcome"], second["error.type"]) == ("failed", "schema_error")
        (failed,) = [s for s in traced.named("execute_tool save") if not s.status.is_ok]
        assert _attrs(failed)["warden.outcome"] == "failed"
    finally:
        traced.telemetry.close()
        gateway.close()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask_for_it(env: dict[str, str], on: bool) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from warden.telemetry import exporter_from_env

    exporter = exporter_from_env(env)
    assert isinstance(exporter, OTLPSpanExporter) is on


# -- over HTTP ----------------------------------------------------------------------------


async def test_http_calls_join_the_traceparent_of_the_request(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    exporter = InMemorySpanExporter()
    batcher = SpanBatcher(exporter, schedule_delay_s=60)
    app = create_app(
        ServerSettings(
            store=store_url,
            specs=[str(spec)],
            tools=[f"{TESTS / 'server_tools.py'}:tools"],
            auto_migrate=True,
            key_cache_s=0.0,
        ),
        telemetry=Telemetry(traces=batcher),
    )
    key = KeyStore(app.state.warden.store).create(
        name="bot", role="agent", tenant="acme", created_by="tests", agent="bot"
    )[1]
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    agent_span = "b7ad6b7169203331"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {key}"},
        ) as bot,
    ):
        run_id = await _open(bot)
        bot.headers["traceparent"] = f"00-{trace_id}-{agent_span}-01"
        assert (await _act(bot, run_id, "pay", PAY_300))["status"] == "pending"
        del bot.headers["traceparent"]
        assert (await _act(bot, run_id, "get_order", {"order_id": "o1"}))["status"] == "allowed"
        # the remote SDK sends the caller's current span as the traceparent
        remote = RemoteGateway("http://warden.test", api_key=key, workflow="shop", client=bot)
        provider = TracerProvider()
        with provider.get_tracer("agent").start_as_current_span("agent turn") as turn:
            async with remote.run(agent="bot", task="t") as remote_run:
                assert isinstance(await remote_run.call("get_doc", {"doc_id": "d"}), Allowed)
    batcher.force_flush()
    spans = exporter.get_finished_spans()
    (pay,) = [s for s in spans if s.name == "execute_tool pay"]
    assert f"{pay.context.trace_id:032x}" == trace_id
    assert pay.parent is not None and f"{pay.parent.span_id:016x}" == agent_span
    assert _attrs(pay)["warden.decision.effect"] == "require_approval"
    (read,) = [s for s in spans if s.name == "execute_tool get_order"]
    # no traceparent: a child of its run's span, found by the run's ids
    assert read.parent is not None and read.parent.span_id == run_context(run_id).span_id
    (doc,) = [s for s in spans if s.name == "execute_tool get_doc"]
    assert doc.context.trace_id == turn.get_span_context().trace_id
    assert doc.parent is not None and doc.parent.span_id == turn.get_span_context().span_id


# -- a real server, a real OTLP/HTTP receiver -------------------------------------------


class _Receiver:
    """An OTLP/HTTP trace receiver on loopback: decodes each export's protobuf."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    received.resources.append(
                        {a.key: a.value.string_value for a in rs.resource.attributes}
                    )
                    for ss in rs.scope_spans:
                        received.spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attr(span: Any, key: str) -> Any:
    for a in span.attributes:
        if a.key == key:
            value = a.value
            kind = value.WhichOneof("value")
            if kind == "array_value":
                return tuple(v.string_value for v in value.array_value.values)
            return getattr(value, kind)
    return None


def test_warden_serve_exports_the_demo_agents_spans_over_otlp(tmp_path: Path) -> None:
    receiver = _Receiver()
    port = free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_SERVICE_NAME": "warden-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)
        made = subprocess.run(
            [sys.executable, "-m", "warden", "keys", "create", "--role", "agent", "--name",
             "bot", "--tenant", "acme", "--agent", "refund-bot"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        agent = subprocess.run(
            [sys.executable, str(EXAMPLE / "remote_agent.py"), "--url", url, "--api-key", key],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert agent.returncode == 0, agent.stderr
        deadline = time.monotonic() + 30
        while not any(s.name == "execute_tool issue_refund" for s in receiver.spans):
            assert time.monotonic() < deadline, [s.name for s in receiver.spans]
            time.sleep(0.1)
        # the same server's /metrics shows the demo's calls (a loopback scrape needs no key)
        metrics = httpx.get(url + "/metrics", timeout=10).text
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
        receiver.close()
    names = {s.name for s in receiver.spans}
    assert {"execute_tool issue_refund", "execute_tool lookup_order"} <= names
    assert any(r.get("service.name") == "warden-test" for r in receiver.resources)
    refunds = [s for s in receiver.spans if s.name == "execute_tool issue_refund"]
    effects = {_attr(s, "warden.decision.effect") for s in refunds}
    assert {"allow", "require_approval"} <= effects
    for span in refunds:
        assert _attr(span, "gen_ai.operation.name") == "execute_tool"
        assert _attr(span, "warden.decision.rules")
        run_id = _attr(span, "warden.run.id")
        assert span.parent_span_id == run_context(run_id).span_id.to_bytes(8, "big")
    from test_telemetry_metrics import value

    assert value(metrics, "warden_calls_total", tool="issue_refund", outcome="executed") >= 1
    assert value(metrics, "warden_calls_total", tool="issue_refund", outcome="pending") >= 1
    assert value(metrics, "warden_denials_total", kind="unknown_tool") >= 1
    assert value(metrics, "warden_approvals_requested_total", workflow="refund_triage") >= 1
    # the run spans were exported by the process that opened and finished them
    assert any(s.name.startswith("invoke_agent ") for s in receiver.spans), sorted(names)


# -- model calls ------------------------------------------------------------------------


async def test_a_model_call_is_a_chat_span_with_usage_and_budget(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_model_calls import HELLO
    from test_model_calls import gateway as model_gateway

    from warden.pipeline._models import ChatResult
    from warden.telemetry import Metrics, StoreCollector, scrape
    from warden.testing import FakeReply, FakeUpstream
    from warden.upstream import Usage

    budgets = "  - {name: monthly, scope: workflow, period: calendar_month, usd: 10}"
    with FakeUpstream(api_key="sk-upstream") as fake:
        gw = model_gateway(store_url, fake, monkeypatch, budgets)
        traced = Traced(gw)
        metrics = Metrics()
        instrument(gw, metrics=metrics)
        fake.push(FakeReply("hi there", usage=Usage(1000, 500)))
        async with gw.run(tenant="acme", agent="bot", task="greet") as run:
            assert isinstance(await run.chat("small", HELLO, max_tokens=600), ChatResult)
        (chat,) = traced.named("chat small")
        attrs = _attrs(chat)
        assert attrs["gen_ai.operation.name"] == "chat"
        assert (attrs["gen_ai.request.model"], attrs["gen_ai.response.model"]) == (
            "small-1",
            "small-1",
        )
        assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (
            1000,
            500,
        )
        assert attrs["warden.budget.settled_usd"] == "0.002"
        assert float(attrs["warden.budget.reserved_usd"]) > 0  # held before the call
        stages = {
            s.name for s in traced.spans() if s.parent and s.parent.span_id == chat.context.span_id
        }
        assert {"warden.budget", "warden.upstream"} <= stages

        text = scrape(metrics, StoreCollector(gw.store, [gw]))[0].decode()
        assert (
            'warden_model_tokens_total{direction="output",model="small",workflow="assist"} 500.0'
            in text
        )
        assert 'warden_spend_usd_total{source="model",workflow="assist"} 0.002' in text
        assert 'warden_budget_spent_usd{budget="monthly",workflow="assist"} 0.002' in text
        assert 'warden_budget_remaining_usd{budget="monthly",workflow="assist"} 9.998' in text
        traced.telemetry.close()
        metrics.close()
        await gw.aclose()
