"""Record every model call an `anthropic` client makes: `recorded(Anthropic(), lg, purpose=...)`.

The same hook as for OpenAI (`ledger.integrations.http`: the Anthropic SDK is built on httpx2 too),
for `anthropic.Anthropic` and `AsyncAnthropic`: every successful POST `/v1/messages` is recorded as
provider ``anthropic`` — a plain message, or a streamed one (`stream=True` or `messages.stream(...)`)
as the list of its event payloads, complete once `message_stop` arrives, ``complete=False`` when the
caller closes or drops it first or the server ends it with an `error` event. Token counting
(`/v1/messages/count_tokens`) and Message Batches (`/v1/messages/batches`; import their results
with `ledger import calls --format anthropic-batch`) are not model calls here. The outputs recorded
are the texts of `text` and `thinking` blocks and each `tool_use` input as JCS, streamed or not.

A failure to record raises `RecordingError` (``on_error="raise"``) carrying the response; it is also
an `anthropic.AnthropicError`, because the SDK would otherwise wrap it as a connection error and
send the call again. `recorded` is the one of `ledger.integrations.openai`: it takes every supported
client class.
"""

from __future__ import annotations

from ledger.integrations.clients import recorded
from ledger.integrations.http import (
    ANTHROPIC_ENDPOINTS,
    PURPOSES,
    CallRecorder,
    CapturedCall,
    RecordingError,
    RecordingWarning,
)

__all__ = [
    "ANTHROPIC_ENDPOINTS",
    "PURPOSES",
    "CallRecorder",
    "CapturedCall",
    "RecordingError",
    "RecordingWarning",
    "recorded",
]
