"""OpenTelemetry traces of runs and governed calls, with the GenAI semantic conventions.

Spans:

- ``invoke_agent {agent}``: a run, from ``run_started`` to ``run_finished`` (its events).
- ``execute_tool {tool}`` / ``chat {model}``: one governed call (a model call is the tool
  ``model:<name>``), from entering the pipeline to its result, with the decision, the
  approval, the budget and the outcome as ``warden.*`` attributes.
- ``warden.<stage>``: a child per stage that did work (fact lookups in ``policy``, the
  ``serialize`` lock, ``idempotency``, ``execute`` when the tool was retried, the model's
  ``budget`` and ``upstream``), and ``warden.approval.wait`` while a call waited for a
  human decision.

A run can outlive a request, a process and a replica, so its span is never something a
later call has to find in memory: its ids are derived from the run id (``run_context``).
A call whose caller sent no trace context is a child of its run's span, on any replica;
a call that arrives in the agent's own trace (W3C ``traceparent`` on the HTTP request, or
the current OpenTelemetry context of an in-process caller) is a child of the agent's span
and links to its run's span. The run span itself is exported by the process that saw the
run finish, if it also saw it start (the usual case: a run opened and finished through
one gateway); otherwise its calls still carry ``warden.run.id`` and the run's ids.

Spans are recorded as plain tuples on the call's path (~1 µs) and made into SDK spans and
exported in batches by a background thread (``SpanBatcher``): the SDK's own tracer took
~15-23 µs a span here, half a governed read. Nothing a caller sent is put into a span
(no arguments, no results, no reasons): ids, names, decisions, counts and amounts only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from sqlalchemy import Connection

from warden.events import EventKind
from warden.pipeline._call import Call, RunState
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result
from warden.spec import MODEL_TOOL_PREFIX

log = logging.getLogger("warden.telemetry")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
#: stages that get a child span when they ran (``policy`` when it looked facts up,
#: ``execute`` when the tool was retried; the others are checks of a few µs). A span is
#: ~10 µs of the export thread's time: one more per governed read cost it ~10 %, measured
_WORK = frozenset({"serialize", "idempotency", "budget", "upstream"})
#: open runs and recently pending calls remembered per sink (bounded: oldest dropped)
_MAX_REMEMBERED = 10_000

Attrs = dict[str, Any]
#: name, kind, context, parent, start ns, end ns, attributes, links, status
SpanRecord = tuple[
    str, SpanKind, SpanContext, SpanContext | None, int, int, Attrs, Sequence[Link], Status
]
#: what the call path hands the batcher: a function that makes the spans (in the export
#: thread) and what it makes them from; ``None`` and a ``SpanRecord``: that span as it is
Entry = tuple[Callable[[Any], list[SpanRecord]] | None, Any]


def run_context(run_id: str, trace_id: int | None = None) -> SpanContext:
    """The span context of run ``run_id``'s ``invoke_agent`` span: its span id (and,
    unless the run began in the agent's trace ``trace_id``, its trace id) derived from the
    run id, so every process and replica puts the run's calls under the same span."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=24, person=b"warden-run").digest()
    tid = trace_id or int.from_bytes(digest[:16], "big") or 1
    sid = int.from_bytes(digest[16:], "big") or 1
    return SpanContext(tid, sid, is_remote=False, trace_flags=_SAMPLED)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default


class SpanBatcher:
    """A batch span processor whose call-path cost is one ``deque.append``.

    Entries are turned into SDK ``ReadableSpan``s (their attributes built then, from
    what the call path kept) and handed to ``exporter`` by a daemon thread every
    ``schedule_delay_s``, or sooner once ``max_export_batch`` are waiting.
    When ``max_queue`` records wait, new ones are dropped and counted (``dropped``), as the
    SDK's ``BatchSpanProcessor`` does. Defaults from ``OTEL_BSP_SCHEDULE_DELAY`` (ms),
    ``OTEL_BSP_MAX_QUEUE_SIZE`` and ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        resource: Resource | None = None,
        schedule_delay_s: float | None = None,
        max_export_batch: int | None = None,
        max_queue: int | None = None,
    ) -> None:
        self.exporter = exporter
        self.resource = resource or default_resource()
        self.scope = InstrumentationScope("warden", _version())
        self._delay = (
            schedule_delay_s
            if schedule_delay_s is not None
            else _env_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        )
        self._batch = int(max_export_batch or _env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self._max = int(max_queue or _env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048))
        self._queue: deque[Entry] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="warden-spans", daemon=True)
        self._thread.start()

    def add(self, entry: Entry) -> None:
        """Queue ``entry``: ``(None, span_record)``, or ``(build, payload)`` where
        ``build(payload)`` makes the records later, off the call's path."""
        queue = self._queue
        if len(queue) >= self._max:
            self.dropped += 1
            return
        queue.append(entry)
        if len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay)
            self._wake.clear()
            self.force_flush()

    def force_flush(self) -> None:
        """Export everything recorded so far (in this thread)."""
        with self._export_lock:
            queue = self._queue
            while queue:
                batch: list[ReadableSpan] = []
                while queue and len(batch) < self._batch:
                    build, payload = queue.popleft()
                    if build is None:
                        batch.append(self._span(payload))
                        continue
                    try:
                        batch.extend(self._span(r) for r in build(payload))
                    except Exception:  # one bad entry must not lose the batch
                        log.exception("making spans of a call failed")
                try:
                    self.exporter.export(batch)
                except Exception:  # an exporter's failure must not stop the next batch
                    log.exception("exporting %d spans failed", len(batch))

    def _span(self, record: SpanRecord) -> ReadableSpan:
        name, kind, ctx, parent, start, end, attrs, links, status = record
        return ReadableSpan(
            name=name,
            context=ctx,
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            links=links,
            kind=kind,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self.scope,
        )

    def shutdown(self) -> None:
        """Export what is left and shut the exporter down."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        self.force_flush()
        self.exporter.shutdown()


def default_resource() -> Resource:
    """The resource of Warden's spans: ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME`` as the SDK reads them, with ``service.name`` ``warden`` unless
    they name one."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "warden"}))
    return detected


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("warden")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "0"


def _new_id() -> int:
    return random.getrandbits(64) or 1


class TraceSink:
    """Spans of one workflow's runs and calls, recorded to ``batcher``.

    A ``Sink`` (the ``run_started``/``run_finished`` events make the run's span) and a
    ``StageObserver`` (each call's span and its stages' spans are made when the call
    leaves the pipeline, from the call itself: its tool, decision, approval, budget and
    result). Install both roles with ``warden.telemetry.instrument``.
    """

    def __init__(self, batcher: SpanBatcher, workflow: str) -> None:
        self.batcher = batcher
        self.workflow = workflow
        # perf_counter_ns (the stage marks) to time_ns (what spans carry)
        self._offset = time.time_ns() - time.perf_counter_ns()
        self._runs: OrderedDict[str, tuple[SpanContext, SpanContext | None, int, Attrs]] = (
            OrderedDict()
        )
        #: span contexts of calls that ended pending an approval, by action id
        self._pending: OrderedDict[str, tuple[SpanContext, str]] = OrderedDict()

    # Sink ------------------------------------------------------------------------------

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        if kind == "run_started":
            self._run_started(run_id, tenant, payload)
        elif kind == "run_finished":
            self._run_finished(run_id, payload)

    def _run_started(self, run_id: str, tenant: str, payload: dict[str, Any]) -> None:
        caller = trace.get_current_span().get_span_context()
        parent = caller if caller.is_valid else None
        if parent is not None and not parent.trace_flags.sampled:
            return
        ctx = run_context(run_id, parent.trace_id if parent is not None else None)
        agent = payload["agent"]
        attrs: Attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": run_id,
            "warden.run.id": run_id,
            "warden.workflow": self.workflow,
            "warden.workflow.version": payload["version"],
            "warden.policy": payload["policy_fingerprint"],
            "warden.tenant": tenant,
            "warden.tier": payload["tier"],
        }
        if payload.get("task_type"):
            attrs["warden.task_type"] = payload["task_type"]
        runs = self._runs
        runs[run_id] = (ctx, parent, time.time_ns(), attrs)
        if len(runs) > _MAX_REMEMBERED:
            runs.popitem(last=False)

    def _run_finished(self, run_id: str, payload: dict[str, Any]) -> None:
        found = self._runs.pop(run_id, None)
        if found is None:
            return
        ctx, parent, start, attrs = found
        attrs["warden.run.outcome"] = payload["outcome"]
        attrs["warden.run.steps"] = payload["steps"]
        if payload.get("stopped"):
            attrs["warden.run.stopped"] = payload["stopped"]
        if payload.get("success") is not None:
            attrs["warden.run.success"] = payload["success"]
        status = _ERROR if payload["outcome"] == "error" else _OK
        name = f"invoke_agent {attrs['gen_ai.agent.name']}"
        self.batcher.add(
            (None, (name, SpanKind.INTERNAL, ctx, parent, start, time.time_ns(), attrs, (), status))
        )

    # StageObserver ---------------------------------------------------------------------

    def call_done(
        self, call: Call, result: Result | None, marks: list[tuple[str | None, int]]
    ) -> None:
        # On the call's path: who the parent is (the caller's context is only here) and
        # the call's span id; attributes and stage spans are made in the export thread.
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid and not caller.trace_flags.sampled:
            return
        found = self._runs.get(call.run.run_id)
        span_id = None  # made in the export thread unless something here needs it
        if isinstance(result, Pending):
            span_id = _new_id()
            if caller.is_valid:
                trace_id = caller.trace_id
            else:
                trace_id = (found[0] if found else run_context(call.run.run_id)).trace_id
            pending = self._pending
            pending[call.action_id] = (SpanContext(trace_id, span_id, False, _SAMPLED), result.role)
            if len(pending) > _MAX_REMEMBERED:
                pending.popitem(last=False)
        earlier = None
        if call.approval is not None:
            earlier = self._pending.pop(call.action_id, None)
        self.batcher.add(
            (
                self._call_spans,
                (
                    call,
                    result,
                    marks,
                    caller if caller.is_valid else None,
                    found[0] if found else None,
                    span_id,
                    earlier[0] if earlier else None,
                ),
            )
        )

    def _call_spans(self, payload: tuple[Any, ...]) -> list[SpanRecord]:
        """The call's span and its stages' (in the export thread)."""
        call, result, marks, caller, run_ctx, span_id, earlier = payload
        run = call.run
        if run_ctx is None:
            run_ctx = run_context(run.run_id)
        links: list[Link] = []
        if caller is not None:
            parent = caller
            links.append(Link(run_ctx, {"warden.link": "run"}))
        else:
            parent = run_ctx
        if earlier is not None:
            links.append(Link(earlier, {"warden.link": "approval_requested"}))
        ctx = SpanContext(parent.trace_id, span_id or _new_id(), False, _SAMPLED)
        status = _ERROR if result is None or isinstance(result, Failed) else _OK
        tool = call.tool_name
        if tool.startswith(MODEL_TOOL_PREFIX):
            name, kind = f"chat {tool.removeprefix(MODEL_TOOL_PREFIX)}", SpanKind.CLIENT
        else:
            name, kind = f"execute_tool {tool}", SpanKind.INTERNAL
        offset = self._offset
        attrs = self._call_attrs(call, result, run)
        tool_ms = _stage_ms(marks, "execute")
        if tool_ms is not None:
            attrs["warden.execute.ms"] = tool_ms
        out: list[SpanRecord] = [
            (name, kind, ctx, parent, marks[0][1] + offset, marks[-1][1] + offset, attrs,
             links, status)
        ]  # fmt: skip
        for stage, start, end in _work_spans(marks, bool(call.facts), call.attempts > 1):
            stage_attrs: Attrs = {"warden.stage": stage}
            if stage == "execute" and call.attempts:
                stage_attrs["warden.execute.attempts"] = call.attempts
                stage_attrs["warden.execute.retries"] = max(call.attempts - 1, 0)
            elif stage == "policy":
                stage_attrs["warden.facts"] = tuple(sorted(call.facts))
            out.append(
                (
                    f"warden.{stage}",
                    SpanKind.INTERNAL,
                    SpanContext(parent.trace_id, _new_id(), False, _SAMPLED),
                    ctx,
                    start + offset,
                    end + offset,
                    stage_attrs,
                    (),
                    _OK,
                )
            )
        return out

    def approval_waited(self, run: RunState, pending: Pending, start_ns: int, end_ns: int) -> None:
        found = self._pending.get(pending.action_id)
        if found is None:
            return
        ctx = found[0]
        attrs: Attrs = {
            "warden.approval.id": pending.approval_id,
            "warden.approval.role": pending.role,
            "warden.approval.wait_s": round((end_ns - start_ns) / 1e9, 6),
        }
        span_ctx = SpanContext(ctx.trace_id, _new_id(), False, _SAMPLED)
        record: SpanRecord = (
            "warden.approval.wait", SpanKind.INTERNAL, span_ctx, ctx, start_ns, end_ns, attrs,
            (), _OK,
        )  # fmt: skip
        self.batcher.add((None, record))

    def _call_attrs(self, call: Call, result: Result | None, run: RunState) -> Attrs:
        tool = call.tool_name
        attrs: Attrs
        if tool.startswith(MODEL_TOOL_PREFIX):
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": tool.removeprefix(MODEL_TOOL_PREFIX),
            }
        else:
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.type": "function",
            }
        attrs["gen_ai.tool.call.id"] = call.action_id
        attrs["gen_ai.conversation.id"] = run.run_id
        attrs["gen_ai.agent.name"] = run.agent
        attrs["warden.run.id"] = run.run_id
        attrs["warden.workflow"] = self.workflow
        attrs["warden.tenant"] = run.tenant
        decision = call.decision
        if decision is not None:
            attrs["warden.decision.effect"] = decision.effect.value
            attrs["warden.decision.rules"] = decision.rules
            attrs["warden.decision.risk"] = decision.risk
            attrs["warden.decision.policy"] = decision.policy_fingerprint
            if decision.matched:
                attrs["warden.decision.matched"] = decision.matched
        approval = call.approval
        if approval is not None:
            attrs["warden.approval.id"] = approval.approval_id
            attrs["warden.approval.role"] = approval.role
            attrs["warden.approval.state"] = approval.state
            if approval.decided_at is not None:
                # from the request to the decision, whichever process saw either
                wait = approval.decided_at - approval.created_at
                attrs["warden.approval.wait_s"] = round(wait.total_seconds(), 3)
        if call.attempts:
            attrs["warden.execute.attempts"] = call.attempts
        if call.cost is not None:
            attrs["warden.cost_usd"] = str(call.cost)
        model = call.model
        if model is not None:
            _model_attrs(attrs, model)
        _outcome_attrs(attrs, result)
        return attrs


def _model_attrs(attrs: Attrs, model: Any) -> None:
    attrs["gen_ai.request.model"] = model.spec.model
    attrs["warden.model"] = model.name
    reply = model.reply
    if reply is not None and reply.route is not None:
        attrs["gen_ai.response.model"] = reply.route.model
        attrs["warden.model.upstream"] = reply.route.upstream
    usage = model.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
    held = model.reservation
    if held is not None:
        attrs["warden.budget.reservation"] = held.id
        attrs["warden.budget.reserved_usd"] = str(held.amount.usd)
    if model.settled and model.cost_usd is not None:
        attrs["warden.budget.settled_usd"] = str(model.cost_usd)
    if model.cached:
        attrs["warden.model.cached"] = True


def _outcome_attrs(attrs: Attrs, result: Result | None) -> None:
    match result:
        case Allowed():
            attrs["warden.outcome"] = "executed"
            if result.replayed:
                attrs["warden.replayed"] = True
        case Denied():
            attrs["warden.outcome"] = "denied"
            attrs["warden.denied.kind"] = result.kind.value
            if result.rules:
                attrs["warden.denied.rules"] = result.rules
            if result.kind is FailureKind.KILLED:
                attrs["warden.kill_switch"] = True
        case Failed():
            attrs["warden.outcome"] = "failed"
            attrs["error.type"] = result.kind.value
            if result.kind is FailureKind.KILLED:
                attrs["warden.kill_switch"] = True
        case Pending():
            attrs["warden.outcome"] = "pending"
            attrs["warden.approval.id"] = result.approval_id
            attrs["warden.approval.role"] = result.role
            attrs["warden.approval.deadline"] = result.deadline.isoformat()
        case Drafted():
            attrs["warden.outcome"] = "drafted"
        case None:
            attrs["warden.outcome"] = "error"
            attrs["error.type"] = "exception"


def _work_spans(
    marks: list[tuple[str | None, int]], facts: bool, retried: bool
) -> list[tuple[str, int, int]]:
    """``(stage, start, end)`` of the stages in ``marks`` that did work worth a span."""
    out: list[tuple[str, int, int]] = []
    stack: list[tuple[str, int]] = []
    for name, at in marks:
        if name is not None:
            stack.append((name, at))
            continue
        stage, start = stack.pop()
        if stage in _WORK or (facts and stage == "policy") or (retried and stage == "execute"):
            out.append((stage, start, at))
    return out


def _stage_ms(marks: list[tuple[str | None, int]], wanted: str) -> float | None:
    """How long stage ``wanted`` took, in ms (None: it did not run)."""
    stack: list[tuple[str, int]] = []
    for name, at in marks:
        if name is not None:
            stack.append((name, at))
            continue
        stage, start = stack.pop()
        if stage == wanted:
            return round((at - start) / 1e6, 3)
    return None


def exclusive_times(marks: list[tuple[str | None, int]]) -> list[tuple[str, int]]:
    """``(stage, ns)``: the time each stage took itself, without the stages it wrapped."""
    out: list[tuple[str, int]] = []
    stack: list[list[Any]] = []  # [name, start, time in inner stages]
    for name, at in marks:
        if name is not None:
            stack.append([name, at, 0])
            continue
        stage, start, inner = stack.pop()
        total = at - start
        out.append((stage, total - inner))
        if stack:
            stack[-1][2] += total
    return out


def exporter_from_env(environ: dict[str, str] | None = None) -> SpanExporter | None:
    """The OTLP/HTTP (protobuf) exporter the standard ``OTEL_*`` variables ask for, or
    None: tracing is off unless ``OTEL_TRACES_EXPORTER`` names ``otlp`` or an OTLP
    endpoint is set, and ``OTEL_SDK_DISABLED`` / ``OTEL_TRACES_EXPORTER=none`` turn it off.
    The exporter reads the endpoint, headers, timeout and compression variables itself."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = {n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()}
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if "none" in names or not ("otlp" in names or (not names and endpoint)):
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or ""
    )
    if protocol and protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not supported; exporting with http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def traces_from_env() -> SpanBatcher | None:
    """A batcher exporting over OTLP/HTTP when the ``OTEL_*`` variables turn tracing on."""
    exporter = exporter_from_env()
    return SpanBatcher(exporter) if exporter is not None else None
