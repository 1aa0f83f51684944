"""Model upstreams: where Warden sends a governed model call, and how it comes back.

``OpenAIUpstream`` (OpenAI, Azure, vLLM, Ollama) and ``AnthropicUpstream`` send a
``ChatRequest`` and return a ``ChatReply`` or an open ``ChatStream``, with the upstream's
usage read from the reply or the stream; ``FallbackChain`` tries ordered targets and
records the route. Requests keep their wire shape, and are converted only when they go to
an upstream of the other kind.
"""

from warden.upstream._anthropic import AnthropicUpstream
from warden.upstream._client import ChatStream, KeySource, Upstream, UpstreamOptions, new_client
from warden.upstream._errors import (
    FALLBACK_REASONS,
    Reason,
    UpstreamCircuitOpen,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponseError,
    UpstreamsExhausted,
    UpstreamStatusError,
    UpstreamStreamInterrupted,
    UpstreamTimeout,
)
from warden.upstream._fallback import FallbackChain, Target
from warden.upstream._openai import OpenAIUpstream
from warden.upstream._types import (
    AnthropicChatRequest,
    ChatReply,
    ChatRequest,
    OpenAIChatRequest,
    Route,
    Skip,
    StreamEvent,
    ToolCall,
    Usage,
    Wire,
    parse_request,
)

__all__ = [
    "FALLBACK_REASONS",
    "AnthropicChatRequest",
    "AnthropicUpstream",
    "ChatReply",
    "ChatRequest",
    "ChatStream",
    "FallbackChain",
    "KeySource",
    "OpenAIChatRequest",
    "OpenAIUpstream",
    "Reason",
    "Route",
    "Skip",
    "StreamEvent",
    "Target",
    "ToolCall",
    "Upstream",
    "UpstreamCircuitOpen",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamOptions",
    "UpstreamResponseError",
    "UpstreamStatusError",
    "UpstreamStreamInterrupted",
    "UpstreamTimeout",
    "UpstreamsExhausted",
    "Usage",
    "Wire",
    "new_client",
    "parse_request",
]
