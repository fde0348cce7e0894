"""Record every model call an `openai` client makes: `recorded(OpenAI(), lg, purpose="evaluation")`.

`recorded` returns a copy of the client (same class, same API, sync or async) whose HTTP layer hands
every successful POST to a model endpoint (`/chat/completions`, `/completions`, `/responses`) to
`Ledger.record_call`, streams included; what the caller receives is never changed. It takes
`OpenAI`/`AsyncOpenAI` (provider ``openai``), `AzureOpenAI`/`AsyncAzureOpenAI` (``azure-openai``;
the deployment in the URL is recorded as the model when neither body names one) and, as DESIGN.md
"Providers" says, the Anthropic clients too (see `ledger.integrations.anthropic`). ``provider=``
names an OpenAI-compatible server (vLLM, DeepSeek, ...).

If recording fails, ``on_error="raise"`` (the default) raises `RecordingError` carrying the response;
``on_error="warn"`` issues a `RecordingWarning` instead. The hook itself is
`ledger.integrations.http`; the choice of provider and endpoints is `ledger.integrations.clients`.
"""

from __future__ import annotations

from ledger.integrations.clients import recorded
from ledger.integrations.http import (
    DEFAULT_ENDPOINTS,
    PURPOSES,
    CallRecorder,
    CapturedCall,
    RecordingError,
    RecordingWarning,
    SSEParser,
)

__all__ = [
    "DEFAULT_ENDPOINTS",
    "PURPOSES",
    "CallRecorder",
    "CapturedCall",
    "RecordingError",
    "RecordingWarning",
    "SSEParser",
    "recorded",
]
