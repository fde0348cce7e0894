"""`recorded(client, ledger, purpose=...)`: an SDK client whose every model call is recorded.

The client's class says which API it speaks, hence which provider name, endpoints and model rules
apply (DESIGN.md "Providers"): `openai.OpenAI`/`AsyncOpenAI` record as ``openai``,
`openai.AzureOpenAI`/`AsyncAzureOpenAI` as ``azure-openai`` (the deployment in the URL is the model
when neither body names one), `anthropic.Anthropic`/`AsyncAnthropic` as ``anthropic`` (POST
`/v1/messages`, plain or streamed). ``provider=`` names another server that speaks one of these APIs
(vLLM, DeepSeek, ...). Neither SDK is imported here: a class is known by its package and name.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx2

from ledger.errors import UsageError
from ledger.integrations.http import (
    ANTHROPIC_ENDPOINTS,
    DEFAULT_ENDPOINTS,
    CallLedger,
    CallRecorder,
    OnError,
    RecordingError,
    is_recording_client,
    recording_http_client,
)

__all__ = ["CLIENT_CLASSES", "ClientAPI", "client_api", "recorded"]

ClientT = TypeVar("ClientT")


@dataclass(frozen=True)
class ClientAPI:
    """What a client class speaks: the provider name its calls are recorded under, its model
    endpoints, whether its URLs name a deployment, and its SDK's root error class (by name)."""

    provider: str
    endpoints: tuple[str, ...]
    deployments: bool = False
    sdk_error: str | None = None


_OPENAI = ClientAPI("openai", DEFAULT_ENDPOINTS)
_AZURE = ClientAPI("azure-openai", DEFAULT_ENDPOINTS, deployments=True)
# The Anthropic SDK turns any other exception raised while it sends or reads a response into an
# APIConnectionError and retries the call (sending it again); its own errors pass through as they are.
_ANTHROPIC = ClientAPI("anthropic", ANTHROPIC_ENDPOINTS, sdk_error="AnthropicError")

CLIENT_CLASSES: dict[tuple[str, str], ClientAPI] = {
    ("openai", "AzureOpenAI"): _AZURE,
    ("openai", "AsyncAzureOpenAI"): _AZURE,
    ("openai", "OpenAI"): _OPENAI,
    ("openai", "AsyncOpenAI"): _OPENAI,
    ("anthropic", "Anthropic"): _ANTHROPIC,
    ("anthropic", "AsyncAnthropic"): _ANTHROPIC,
}
"""(top-level package, class name) -> its API; a subclass takes its nearest known base's."""

_EXPECTED = (
    "an openai.OpenAI, AsyncOpenAI, AzureOpenAI, AsyncAzureOpenAI, anthropic.Anthropic or "
    "AsyncAnthropic client"
)
_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")


def client_api(client: object, provider: str | None = None) -> ClientAPI:
    """The API `client` speaks, by the nearest known class in its MRO; `provider` overrides the
    recorded name. An unknown class needs `provider` (it is taken to speak the OpenAI API); a client
    of the `anthropic` package that is not an `Anthropic` (Bedrock, Vertex) is refused, as its calls
    go to other endpoints."""
    package = type(client).__module__.partition(".")[0]
    for cls in type(client).__mro__:
        api = CLIENT_CLASSES.get((cls.__module__.partition(".")[0], cls.__name__))
        if api is not None:
            return api if provider is None else dataclasses.replace(api, provider=provider)
    if package == "anthropic" or provider is None:
        raise UsageError(
            f"expected {_EXPECTED} (or provider= for another OpenAI-compatible client), "
            f"found {type(client).__module__}.{type(client).__name__}"
        )
    return ClientAPI(provider, DEFAULT_ENDPOINTS)


def deployment_of(url: httpx2.URL) -> str | None:
    """The Azure OpenAI deployment a request URL names (`/openai/deployments/{name}/...`)."""
    found = _DEPLOYMENT.search(url.path)
    return found.group(1) if found else None


_ERROR_TYPES: dict[type[Exception], type[RecordingError]] = {}


def _error_type(sdk_error: type[Exception]) -> type[RecordingError]:
    """RecordingError that is also the SDK's own root error, so the SDK passes it through; one
    class per SDK, so `except` clauses and pickling see a stable type."""
    found = _ERROR_TYPES.get(sdk_error)
    if found is None:
        found = _ERROR_TYPES[sdk_error] = type(
            "RecordingError",
            (RecordingError, sdk_error),
            {"__module__": RecordingError.__module__, "__doc__": RecordingError.__doc__},
        )
    return found


def _error_type_for(client: object, api: ClientAPI) -> type[RecordingError]:
    if api.sdk_error is None:
        return RecordingError
    for cls in type(client).__mro__:
        module = sys.modules.get(cls.__module__.partition(".")[0])
        base = getattr(module, api.sdk_error, None)
        if isinstance(base, type) and issubclass(base, Exception):
            return _error_type(base)
    return RecordingError


def recorded(
    client: ClientT,
    ledger: CallLedger,
    *,
    purpose: str,
    provider: str | None = None,
    account: str | None = None,
    on_error: OnError = "raise",
    endpoints: Sequence[str] | None = None,
) -> ClientT:
    """A copy of `client` (an OpenAI, Azure OpenAI or Anthropic client, sync or async, or a
    subclass) that records every model call in `ledger` with the declared `purpose`; the original
    client is left as it was.

    `provider` defaults to the client's (``openai``, ``azure-openai``, ``anthropic``) and `endpoints`
    to its API's model endpoints. The copy shares the original's connection pool (as
    `client.with_options` does), so closing either closes both.
    """
    inner = getattr(client, "_client", None)
    with_options = getattr(client, "with_options", None)
    if is_recording_client(inner):
        raise UsageError("this client is already recorded; wrap the original client instead")
    if with_options is None or not isinstance(inner, (httpx2.Client, httpx2.AsyncClient)):
        raise UsageError(
            f"expected {_EXPECTED} built on httpx2, "
            f"found {type(client).__name__} with HTTP client {type(inner).__name__}"
        )
    api = client_api(client, provider)
    recorder = CallRecorder(
        ledger,
        purpose,
        api.provider,
        account,
        on_error,
        tuple(api.endpoints if endpoints is None else endpoints),
        model_from_url=deployment_of if api.deployments else None,
        error_type=_error_type_for(client, api),
    )
    copy: ClientT = with_options(http_client=recording_http_client(inner, recorder))
    return copy
