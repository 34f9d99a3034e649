"""A call's outcome is what its client got — decided through the engine with a
scripted transport: no sockets, no real timeouts.

A stream that broke after commit delivered an error, not an answer: its
outcome is `broken`, whatever its head said. The same judge decides a
stream's commit and a whole answer's verdict.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from support.engine import Clock, ScriptedReply, ScriptedTransport, wire
from switchback.engine.delivery import Committed
from switchback.engine.dispatch import Dispatcher
from switchback.engine.results import Result
from switchback.recognise import LlmCall, recognise
from switchback.vocabulary import CallOutcome

CONFIG = """
providers:
  primary: {base_url: "https://primary.test/v1", keys: [sk-primary-0001]}
  backup: {base_url: "https://backup.test/v1", keys: [sk-backup-0001]}
fallbacks: {"*": [backup/*]}
"""


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    return b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"


def call_of(d: Dispatcher) -> LlmCall:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return recognise("POST", "https://primary.test/v1/chat/completions",
                     [("authorization", "Bearer sk-client")], json.dumps(body).encode(), d.table)


def run(d: Dispatcher, read: bool = True) -> tuple[Result, bytes]:
    """The call's result and what its client reads of its stream (`read`:
    else it hangs up at once), in one event loop as in the proxy."""
    async def go() -> tuple[Result, bytes]:
        result = await d.run(call_of(d))
        assert isinstance(result.delivery, Committed), result.trail
        stream = result.delivery
        try:
            rest = [piece async for piece in stream.rest] if read else []
            return result, stream.first + b"".join(rest)
        finally:
            await stream.aclose()
    return asyncio.run(go())


def concluded(d: Dispatcher) -> tuple[Result, bytes]:
    result, body = run(d)
    assert result.outcome is CallOutcome.OK  # what the head said
    result.conclude()
    return result, body


@pytest.mark.parametrize(("pieces", "outcome"), [
    ([chunk("he"), chunk("llo"), chunk(finish="stop"), b"data: [DONE]\n\n"], CallOutcome.OK),
    # the provider closed after its finish: the answer is whole, its end is owed
    ([chunk("he"), chunk("llo"), chunk(finish="stop")], CallOutcome.OK),
    ([chunk("he"), ConnectionResetError()], CallOutcome.BROKEN),
    ([chunk("he"), asyncio.TimeoutError()], CallOutcome.BROKEN),  # idle timeout
    ([chunk("he")], CallOutcome.BROKEN),  # closed before the answer completed
    ([chunk("he"), b"\x00\x01garbage"], CallOutcome.BROKEN),
])
def test_a_streams_outcome_is_what_its_client_got(pieces, outcome):
    result, body = concluded(wire(CONFIG, Clock(), ScriptedTransport(ScriptedReply(pieces=pieces))))
    assert result.outcome is outcome
    assert body.endswith(b"data: [DONE]\n\n")
    assert (b"switchback_stream_broken" in body) is (outcome is CallOutcome.BROKEN)
    if outcome is CallOutcome.BROKEN:
        assert "stream broke after commit" in str(result.trail)


def test_a_client_that_hangs_up_is_not_counted_as_a_break():
    transport = ScriptedTransport(ScriptedReply(pieces=[chunk("he"), chunk("llo")]))
    result, _ = run(wire(CONFIG, Clock(), transport), read=False)
    result.conclude()
    assert result.outcome is CallOutcome.OK
    assert isinstance(result.delivery, Committed) and result.delivery.broke is None


def test_failover_is_decided_without_a_socket():
    boom = [b'{"error": {"message": "boom"}}']
    transport = ScriptedTransport(  # a 500 is retried once (#17), then the call moves on
        ScriptedReply(500, boom, "application/json"), ScriptedReply(500, boom, "application/json"),
        ScriptedReply(pieces=[chunk("hello"), chunk(finish="stop"), b"data: [DONE]\n\n"]))
    result, body = concluded(wire(CONFIG, Clock(), transport))
    assert result.outcome is CallOutcome.OK and b"hello" in body
    assert [url for url, _, _ in transport.sent] == [
        "https://primary.test/v1/chat/completions", "https://primary.test/v1/chat/completions",
        "https://backup.test/v1/chat/completions"]
    assert str(result.trail).startswith("primary 500 → retried → primary 500 (retry 2s) → backup 200")


def test_a_held_head_that_shows_an_error_event_moves_on_and_is_closed():
    failing = ScriptedReply(pieces=[b": ping\n\n", b'data: {"error": {"message": "overloaded"}}\n\n'])
    serving = ScriptedReply(pieces=[chunk("fine"), chunk(finish="stop"), b"data: [DONE]\n\n"])
    result, body = concluded(wire(CONFIG, Clock(), ScriptedTransport(failing, serving)))
    assert failing.closed and serving.closed
    assert b"overloaded" not in body and b"fine" in body and result.outcome is CallOutcome.OK
    assert "primary error event (overloaded) → backup 200" in str(result.trail)
