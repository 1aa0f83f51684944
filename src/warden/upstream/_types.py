"""The typed view of a model call: request, reply, usage, stream events, route.

Two wire shapes exist, OpenAI's chat completions and Anthropic's messages. A request keeps
the shape its caller used: ``OpenAIChatRequest`` and ``AnthropicChatRequest`` type the
fields Warden reads or changes (model, messages, max_tokens, temperature, tools, ...) and
carry every other parameter through untouched, so the proxy forwards a client's body nearly
as sent and returns the upstream's body as received. The typed fields are for Warden's own
use: pricing reads ``Usage``, output checks read ``text`` and ``tool_calls``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warden.economics._pricing import Usage as Usage  # one Usage for prices and upstreams
from warden.errors import InvalidInputError

#: The two wire shapes: OpenAI chat completions, Anthropic messages.
Wire = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the JSON text the model produced
    (it may be invalid JSON: that is the model's answer, and checks may reject it)."""

    id: str
    name: str
    arguments: str

    @classmethod
    def of(cls, name: str, args: Mapping[str, Any], id: str = "") -> ToolCall:
        """A call with ``args`` encoded as JSON (for scripted replies in tests)."""
        return cls(id or f"call_{name}", name, json.dumps(dict(args), separators=(",", ":")))

    def parsed(self) -> Any:
        """The arguments decoded; raises ``InvalidInputError`` when they are not JSON."""
        try:
            return json.loads(self.arguments) if self.arguments else {}
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"tool call {self.name!r}: arguments are not valid JSON ({exc.msg} at "
                f"position {exc.pos})"
            ) from None


class ChatRequest(BaseModel):
    """A chat request in the shape its caller sent; use a concrete subclass.

    Parameters Warden does not type are kept as extras and sent on unchanged; only the
    fields a caller set are sent (``to_body``), so a body that goes through Warden comes
    out as it came in, apart from what Warden deliberately changed (model, token cap).
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    wire: ClassVar[Wire]

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Self:
        """Validate a request body; every problem is named in one ``InvalidInputError``."""
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
                for err in exc.errors(include_url=False)
            )
            raise InvalidInputError(f"invalid {cls.wire} chat request: {problems}") from None

    @property
    def extra(self) -> dict[str, Any]:
        """The parameters Warden does not type, passed through as they are."""
        return dict(self.model_extra or {})

    @property
    def token_cap(self) -> int | None:
        """The most output tokens the caller allows, if it said."""
        return self.max_tokens

    def with_token_cap(self, tokens: int) -> Self:
        """A copy that asks for at most ``tokens`` output tokens (e.g. what a budget pays)."""
        return self.model_copy(update={"max_tokens": tokens})

    def with_model(self, model: str) -> Self:
        return self.model_copy(update={"model": model})

    def to_body(self) -> dict[str, Any]:
        """The wire body: the fields the caller set (explicit nulls included) and extras."""
        return self.model_dump(exclude_unset=True)


class OpenAIChatRequest(ChatRequest):
    """An OpenAI chat completions request (``POST /v1/chat/completions``).

    System instructions are messages with role ``system`` (or ``developer``).
    ``max_completion_tokens`` supersedes ``max_tokens`` when both are set, as OpenAI reads
    them.
    """

    wire: ClassVar[Wire] = "openai"

    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def with_token_cap(self, tokens: int) -> Self:
        # Keep the caller's choice of field: reasoning models refuse ``max_tokens``.
        name = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        return self.model_copy(update={name: tokens})


class AnthropicChatRequest(ChatRequest):
    """An Anthropic messages request (``POST /v1/messages``): system instructions are the
    top-level ``system``, and ``max_tokens`` is required by the upstream (Warden fills in
    the upstream's default when a converted request has none)."""

    wire: ClassVar[Wire] = "anthropic"

    system: str | list[dict[str, Any]] | None = None


def parse_request(wire: Wire, body: Mapping[str, Any]) -> ChatRequest:
    """The typed request for a body of the given wire shape."""
    cls: type[ChatRequest] = OpenAIChatRequest if wire == "openai" else AnthropicChatRequest
    return cls.parse(body)


@dataclass(frozen=True, slots=True)
class Skip:
    """A target of a fallback chain that did not answer, and why."""

    upstream: str
    model: str
    reason: str
    detail: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Which upstream and model answered, after how many attempts, and which earlier
    targets were skipped and why: what the ledger records as the route of a call."""

    upstream: str
    model: str
    attempts: int = 1
    skipped: tuple[Skip, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatReply:
    """The answer to a chat request.

    ``body`` is in the shape of the *request* (``wire``): what a proxy returns to its
    client. ``raw`` is the upstream's own body, the same object when no conversion was
    needed. ``finish_reason`` uses OpenAI's words (``stop``, ``length``, ``tool_calls``,
    ``content_filter``) whatever the upstream; ``usage`` is ``None`` when the upstream did
    not report it.
    """

    body: dict[str, Any]
    wire: Wire
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    usage: Usage | None
    model: str | None
    route: Route
    raw: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a stream, passed on as it came.

    ``event`` is the SSE event name (Anthropic names every event; OpenAI names none) and
    ``data`` its data, e.g. a JSON chunk or OpenAI's closing ``[DONE]``.
    """

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        """The event framed for the wire, ending with the blank line that closes it."""
        head = f"event: {self.event}\n" if self.event is not None else ""
        if "\n" not in self.data:
            return f"{head}data: {self.data}\n\n".encode()
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"{head}{lines}\n".encode()

    def json(self) -> Any:
        return json.loads(self.data)
