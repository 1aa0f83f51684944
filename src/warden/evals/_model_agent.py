"""A ready model-driven agent for suites: a tool-calling loop whose model calls pass Warden.

``ModelAgent`` sends the case's input and the workflow's tool definitions to a declared
model through ``run.chat`` (a governed model call: switches, policy, budget, usage and
cost on the ledger), executes the tool calls the model answers with through ``run.call``
(each one governed too), feeds the results back, and stops when the model answers without
tool calls or after ``max_steps`` model calls. Requests are in OpenAI's shape; Warden
converts them for an Anthropic upstream, so any declared model works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warden.errors import UsageError
from warden.evals._scenario import Case
from warden.gateway import Run
from warden.pipeline._models import ChatResult, ChatStreamResult
from warden.results import Result, to_wire

#: what the model is told when no ``system`` is given
DEFAULT_SYSTEM = (
    "You are an agent working on the task in the user's message. Use the tools to do it; "
    "a tool result with status denied, pending or failed did not run. Answer without tool "
    "calls when you are done."
)


def tool_definitions(run: Run) -> list[dict[str, Any]]:
    """The workflow's tools as OpenAI function definitions: name, description and the
    input schema Warden validates calls against (model tools left out)."""
    # The registry holds the effective definitions: the spec's input_schema when it gives
    # one, else the schema derived from the implementation's signature.
    registry = run._gateway.svc.registry
    tools: list[dict[str, Any]] = []
    for tool in sorted(registry, key=lambda t: t.name):
        if tool.kind != "tool":
            continue
        function: dict[str, Any] = {
            "name": tool.name,
            "parameters": tool.input.schema if tool.input is not None else {"type": "object"},
        }
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _user_message(case: Case) -> str:
    value = case.input
    if isinstance(value, Mapping) and isinstance(value.get("prompt"), str):
        return str(value["prompt"])
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _tool_calls(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return []
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return []
    calls = message.get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


@dataclass
class ModelAgent:
    """The agent under test as a model in a tool-calling loop (``agent:`` of a suite).

    ``model``: a declared model or route (default: the workflow's first declared model);
    ``system``: the system prompt; ``max_steps``: the most model calls per trial;
    ``params``: more request parameters (``max_tokens``, ``temperature``, ...).

    The case's input is the user message: ``input.prompt`` when it is a string, the input
    itself when it is one, else its JSON. Returns ``{"answer", "calls", "stopped"}``:
    the final text (None when the loop stopped first), each tool call made with its
    result's status, and why it stopped (``answered``, ``max_steps``, or the model call's
    refusal or failure, e.g. ``denied:policy_block``).
    """

    model: str | None = None
    system: str | None = DEFAULT_SYSTEM
    max_steps: int = 10
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise UsageError(f"ModelAgent max_steps must be at least 1, not {self.max_steps}")
        taken = {"messages", "tools", "stream", "wire"} & set(self.params)
        if taken:
            raise UsageError(
                f"ModelAgent params cannot set {', '.join(sorted(taken))}: the loop sets them"
            )

    def _model_for(self, run: Run) -> str:
        if self.model is not None:
            return self.model
        declared = run._gateway.spec.spec.models
        if not declared:
            raise UsageError(
                f"workflow {run._gateway.spec.spec.name!r} declares no model under 'models:'; "
                "ModelAgent needs one"
            )
        return next(iter(declared))

    async def __call__(self, case: Case, run: Run) -> dict[str, Any]:
        model = self._model_for(run)
        tools = tool_definitions(run)
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": _user_message(case)})
        made: list[dict[str, Any]] = []
        params = dict(self.params)
        if tools:
            params["tools"] = tools
        for _ in range(self.max_steps):
            reply = await run.chat(model, messages, **params)
            if isinstance(reply, ChatStreamResult):  # never asked for (params cannot)
                raise UsageError("ModelAgent does not stream")
            if not isinstance(reply, ChatResult):
                return {"answer": None, "calls": made, "stopped": _stop(reply)}
            calls = _tool_calls(reply.body)
            if not calls:
                return {"answer": reply.text, "calls": made, "stopped": "answered"}
            messages.append(
                {"role": "assistant", "content": reply.text or None, "tool_calls": calls}
            )
            for call in calls:
                content, entry = await self._execute(run, call)
                made.append(entry)
                messages.append(
                    {"role": "tool", "tool_call_id": str(call.get("id", "")), "content": content}
                )
        return {"answer": None, "calls": made, "stopped": "max_steps"}

    @staticmethod
    async def _execute(run: Run, call: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run one tool call the model asked for; its result as the tool message's text
        and the entry for the agent's output."""
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        name = str(function.get("name", ""))
        raw = function.get("arguments", "")
        try:
            args = json.loads(raw) if isinstance(raw, str) and raw else raw or {}
        except json.JSONDecodeError as exc:
            # The model's own mistake: told back to it, as a real API's tool loop would.
            text = f"the arguments are not valid JSON ({exc.msg} at position {exc.pos})"
            return json.dumps({"status": "invalid_arguments", "detail": text}), {
                "tool": name,
                "args": raw,
                "status": "invalid_arguments",
            }
        if not isinstance(args, dict):
            detail = "the arguments must be a JSON object"
            return json.dumps({"status": "invalid_arguments", "detail": detail}), {
                "tool": name,
                "args": args,
                "status": "invalid_arguments",
            }
        result = await run.call(name, args)
        wire = to_wire(result)
        return json.dumps(wire, default=str), {"tool": name, "args": args, "status": wire["status"]}


def _stop(result: Result) -> str:
    wire = to_wire(result)
    kind = wire.get("kind")
    return f"{wire['status']}:{kind}" if kind else str(wire["status"])


#: ``agent: warden.evals:model_agent`` in a suite: the workflow's first declared model
model_agent = ModelAgent()
