"""Streams read by the official SDKs, as an application would: the `anthropic`
and `openai` clients' own stream helpers over an in-process transport (no
socket at all), each returning the answer its accumulator assembled — or
raising the SDK's error, as it does for a stream that ends in its
protocol's error form."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai

BASE = "http://127.0.0.1:9"  # never dialled: the transport answers in process


def _client_of(body: bytes) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    return httpx.Client(transport=httpx.MockTransport(answer))


def anthropic_final(stream: bytes) -> dict[str, Any]:
    """The Message `client.messages.stream(...).get_final_message()` builds."""
    with _client_of(stream) as http:
        client = anthropic.Anthropic(api_key="sk-ant-test", base_url=BASE, http_client=http,
                                     max_retries=0)
        with client.messages.stream(model="m", max_tokens=64,
                                    messages=[{"role": "user", "content": "hi"}]) as events:
            return events.get_final_message().model_dump()


def chat_final(stream: bytes) -> dict[str, Any]:
    """The completion `client.chat.completions.stream(...)` assembles (its
    snapshot: `get_final_completion` refuses `length` and `content_filter`
    endings, which are answers all the same)."""
    with _client_of(stream) as http:
        client = openai.OpenAI(api_key="sk-test", base_url=BASE, http_client=http,
                               max_retries=0)
        with client.chat.completions.stream(
                model="m", messages=[{"role": "user", "content": "hi"}]) as events:
            for _ in events:
                pass
            return events.current_completion_snapshot.model_dump()


class StreamFailed(Exception):
    """A Responses stream that ended in `response.failed` (the SDK hands the
    event to the application, which gives up on the answer)."""


def responses_final(stream: bytes) -> dict[str, Any]:
    """The Response the terminal event of `client.responses.stream(...)`
    carries, as the SDK's state checked and built every event before it."""
    with _client_of(stream) as http:
        client = openai.OpenAI(api_key="sk-test", base_url=BASE, http_client=http,
                               max_retries=0)
        with client.responses.stream(model="m", input="hi") as events:
            terminal = None
            for event in events:
                if event.type in ("response.completed", "response.incomplete",
                                  "response.failed"):
                    terminal = event
    if terminal is None:
        raise StreamFailed("the stream ended without a terminal event")
    if terminal.type == "response.failed":
        raise StreamFailed(terminal.response.error)
    return terminal.response.model_dump()
