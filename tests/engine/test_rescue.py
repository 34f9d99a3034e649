"""A stream cut mid-answer, carried on elsewhere: through the real attempt
loop and upstream client against raw-byte fakes on loopback.

The addressed provider streams a recorded answer and breaks at any byte —
the connection cut, a stall past `timeouts.idle`, an error event — and the
backup continues it: one that honours prefill, one that refuses prefill (its
restart repeats the answer), one that rephrases. Every client protocol
(chat, Responses, Messages) with a backup of every protocol: the same, or
translated either way. Whatever the cut, the client's assembled answer is
the whole answer, or (only from the rephrasing backup) what it already had
and a clean error; never anything else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.engine import Clock, ScriptedReply, ScriptedTransport, upstream, wire
from support.fakemessages import OVERLOADED, message_events
from support.fakeprovider import chat_events, response_events, sse, sse_bytes
from support.loopserver import LoopServer, Script, Seen
from switchback.engine.delivery import Committed
from switchback.engine.dispatch import Dispatcher
from switchback.engine.results import Result
from switchback.protocols.assemble import Assembled, assemble
from switchback.protocols.spec import spec
from switchback.protocols.sse import SseParser
from switchback.recognise import recognise
from switchback.vocabulary import CallOutcome, Protocol, Quirk

CHAT, RESPONSES, MESSAGES = Protocol.CHAT, Protocol.RESPONSES, Protocol.MESSAGES
TEXT = "The quick brown fox jumps over the lazy dog and héllo 你好 🎉 once more"
REPHRASED = "A fast brown fox leaps over a sleepy dog"
REFUSAL = {"error": {"message": "This model does not support assistant message prefill. "
                                "The conversation must end with a user message.",
                     "type": "invalid_request_error"}}
BACKUPS = ("prefill", "refuses", "rephrases")
BREAKS = ("cut", "stall", "error")


def answer_stream(protocol: Protocol, text: str, usage: bool = True) -> bytes:
    if protocol is CHAT:
        return sse_bytes(chat_events("m", text, usage=usage))
    if protocol is MESSAGES:
        return sse_bytes(message_events("m", text))
    return sse_bytes(response_events("m", text, rid="resp_primary"))


def prefilled_text(body: dict) -> str | None:
    """The answer's start a request sends back, if it ends with one."""
    last = (body.get("messages") or body.get("input") or [None])[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


def backup_answer(kind: str, protocol: Protocol, body: dict) -> Script:
    start = prefilled_text(body)
    if kind == "refuses" and start is not None:
        return Script.json(400, REFUSAL)
    text = REPHRASED if kind == "rephrases" else TEXT
    if kind == "prefill" and start is not None and TEXT.startswith(start):
        text = TEXT[len(start):]
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return Script.sse([answer_stream(protocol, text, usage)])


def broken(protocol: Protocol, how: str, at: int, body: dict) -> Script:
    """The addressed provider's answer, breaking `how` at byte `at` (an error
    event goes at the event boundary before it)."""
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    stream = answer_stream(protocol, TEXT, usage)
    at = min(at, len(stream))
    if how == "cut":
        return Script.sse([stream[:at]])
    if how == "stall":
        return Script.sse([stream[:at], stream[at:]], pause=30.0)
    boundary = stream.rfind(b"\n\n", 0, at) + 2 if stream.rfind(b"\n\n", 0, at) >= 0 else 0
    numbered = len(SseParser().feed(stream[:boundary]))  # a Responses event's number
    error = {RESPONSES: {"type": "error", "code": "server_error", "message": "overloaded",
                         "sequence_number": numbered},
             MESSAGES: OVERLOADED}.get(protocol, {"error": {"message": "overloaded",
                                                            "type": "server_error"}})
    return Script.sse([stream[:boundary] + sse(error)])


def breaking(client: Protocol, how: str, at: int, backup: str,
             upstream: Protocol | None = None) -> Callable[[Seen], Script]:
    """The fakes' side: the addressed provider breaks `how` at byte `at`,
    the backup answers as its kind does, in `upstream` (default: the client's)."""
    def handler(seen: Seen) -> Script:
        body = json.loads(seen.body)
        if "/primary/" in seen.path:
            return broken(client, how, at, body)
        return backup_answer(backup, upstream or client, body)
    return handler


def setup(server: LoopServer, backup: str, backup_protocol: Protocol, extra: str = "",
          client: Protocol = CHAT, first_byte: str = "10s") -> Dispatcher:
    """The addressed provider and its backup. `first_byte`: short only where
    a failover before commit is as good an outcome as a rescue (the property
    below); elsewhere a loaded machine must not turn the cut into one."""
    continuation = "restart" if backup == "rephrases" else "prefill"
    return wire(f"""
providers:
  primary: {{base_url: "{server.base_url}/primary", protocol: {client}}}
  backup: {{base_url: "{server.base_url}/backup", keys: [sk-backup-0001],
            protocol: {backup_protocol}, continuation: {continuation}}}
fallbacks: {{"*": [backup/*]}}
timeouts: {{first_byte: {first_byte}, idle: 0.3s}}
{extra}""", Clock())


async def run(server: LoopServer, dispatcher: Dispatcher, protocol: Protocol
              ) -> tuple[Result, bytes]:
    body: dict[str, Any] = {"model": "m", "stream": True}
    body.update({"input": "hi"} if protocol is RESPONSES else {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256})
    call = recognise("POST", f"{server.base_url}/primary{spec(protocol).path}",
                     [("authorization", "Bearer sk-client-0001")], json.dumps(body).encode(),
                     dispatcher.table)
    assert call is not None
    try:
        result = await dispatcher.run(call)
        delivery = result.delivery
        if not isinstance(delivery, Committed):
            return result, delivery.body
        try:
            got = delivery.first + b"".join([chunk async for chunk in delivery.rest])
        finally:
            await delivery.aclose()
        result.conclude()
        return result, got
    finally:
        await dispatcher.transport.aclose()


def one_answer(protocol: Protocol, got: bytes) -> Assembled:
    """The client's stream read as its SDK would: one id, one end, dense numbers."""
    answer = assemble(protocol, got)
    assert answer is not None
    events = [e.json() for e in SseParser().feed(got) if isinstance(e.json(), dict)]
    if protocol is CHAT:
        assert len({e["id"] for e in events if "id" in e}) <= 1
        assert sum(1 for e in events for c in e.get("choices") or () if c.get("finish_reason")) \
            <= 1
        assert got.endswith(b"data: [DONE]\n\n") and got.count(b"[DONE]") == 1
    elif protocol is MESSAGES:
        kinds = [e["type"] for e in events]
        assert kinds.count("message_start") == 1 and kinds[-1] in ("message_stop", "error")
        assert kinds.count("message_stop") + kinds.count("error") == 1
        starts = [e["index"] for e in events if e["type"] == "content_block_start"]
        assert starts == list(range(len(starts)))  # each block started once, in order
    else:
        numbers = [e["sequence_number"] for e in events]
        assert numbers == list(range(len(numbers)))
        ends = [e for e in events if e["type"] in ("response.completed", "response.failed",
                                                    "error")]  # the provider's own, as it came
        assert len(ends) == 1 and ends[0] is events[-1]
        assert len({e["response"]["id"] for e in events if "response" in e}) == 1
    return answer


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client=st.sampled_from([CHAT, RESPONSES, MESSAGES]),
       upstream=st.sampled_from([CHAT, RESPONSES, MESSAGES]),
       backup=st.sampled_from(BACKUPS), how=st.sampled_from(BREAKS), data=st.data())
def test_whatever_the_cut_the_client_gets_the_whole_answer_or_its_part_and_a_clean_error(
        client: Protocol, upstream: Protocol, backup: str, how: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(answer_stream(client, TEXT))), label="break at byte")

    handler = breaking(client, how, at, backup, upstream)

    async def go() -> None:
        async with LoopServer(handler) as server:
            result, got = await run(server, setup(server, backup, upstream, client=client,
                                                  first_byte="0.3s"), client)
            answer = one_answer(client, got)
            if answer.error is None and answer.text in (TEXT, REPHRASED):
                return  # whole: from the primary, the backup, or both spliced
            # Only a rephrasing backup may leave the client with its part and an error.
            assert backup == "rephrases", (answer.text, answer.error, str(result.trail))
            assert answer.error is not None and TEXT.startswith(answer.text)
            assert "prefill" not in answer.error
            assert result.outcome is CallOutcome.BROKEN
    asyncio.run(go())


@pytest.mark.parametrize("client", [CHAT, RESPONSES])
def test_a_cut_continued_by_prefill_is_one_answer_named_rescued_in_the_trail(
        client: Protocol) -> None:
    stream = answer_stream(client, TEXT)
    at = stream.index(b"lazy")  # mid-answer

    handler = breaking(client, "cut", at, "prefill")

    async def go() -> None:
        async with LoopServer(handler) as server:
            result, got = await run(server, setup(server, "prefill", client, client=client),
                                    client)
            answer = one_answer(client, got)
            assert answer.error is None and answer.text == TEXT
            assert result.outcome is CallOutcome.RESCUED
            trail = str(result.trail)
            assert trail.startswith("primary cut after ") and " chunks → backup continued " \
                "(prefill, " in trail, trail
            assert prefilled_text(json.loads(server.seen[-1].body)) is not None
            delivery = result.delivery
            assert isinstance(delivery, Committed) and len(delivery.continued) == 1
            assert delivery.continued[0].meter is not None
            assert delivery.continued[0].meter.usage is not None  # the backup's, as reported
            if client is RESPONSES:  # its client sees the usage of both attempts
                assert answer.usage is not None and answer.usage.output > 3
    asyncio.run(go())


def test_a_refused_prefill_is_learned_and_never_reaches_the_client() -> None:
    stream = answer_stream(CHAT, TEXT)
    at = stream.index(b"lazy")

    handler = breaking(CHAT, "cut", at, "refuses")

    async def go() -> None:
        async with LoopServer(handler) as server:
            dispatcher = setup(server, "refuses", CHAT)
            result, got = await run(server, dispatcher, CHAT)
            answer = one_answer(CHAT, got)
            assert answer.error is None and answer.text == TEXT
            assert "backup 400 (refuses prefill)" in str(result.trail)
            assert dispatcher.learned.quirks.has("backup", Quirk.NO_PREFILL, "m")
            asked = len(server.seen)
            result, got = await run(server, setup_again(server, dispatcher), CHAT)
            assert one_answer(CHAT, got).text == TEXT
            # Learned: straight to the restart, no prefill asked again.
            assert [prefilled_text(json.loads(s.body)) for s in server.seen[asked:]
                    if "/backup/" in s.path] == [None]
    asyncio.run(go())


def setup_again(server: LoopServer, before: Dispatcher) -> Dispatcher:
    """A dispatcher over what `before` learned (its transport is closed by now)."""
    return Dispatcher(upstream(), before.config, before.table, before.learned,
                      clock=before.clock)


@pytest.mark.parametrize("how", ["stall", "error"])
def test_a_stall_or_an_error_event_after_commit_is_rescued_too(how: str) -> None:
    stream = answer_stream(CHAT, TEXT)
    at = stream.index(b"lazy")

    handler = breaking(CHAT, how, at, "prefill")

    async def go() -> None:
        async with LoopServer(handler) as server:
            result, got = await run(server, setup(server, "prefill", CHAT), CHAT)
            answer = one_answer(CHAT, got)
            assert answer.error is None and answer.text == TEXT
            word = "stalled" if how == "stall" else "error event"
            assert str(result.trail).startswith(f"primary {word} after ")
            assert b"overloaded" not in got  # the provider's error never reached the client
    asyncio.run(go())


@pytest.mark.parametrize("extra,why", [("resume: off", None),
                                       ("", "n > 1")])
def test_without_resume_or_with_several_choices_the_cut_is_the_clients_to_see(
        extra: str, why: str | None) -> None:
    stream = answer_stream(CHAT, TEXT)
    at = stream.index(b"lazy")

    handler = breaking(CHAT, "cut", at, "prefill")

    async def go() -> None:
        async with LoopServer(handler) as server:
            dispatcher = setup(server, "prefill", CHAT, extra)
            if why:  # n > 1: the call asks for two answers
                original = recognise
                body = {"model": "m", "stream": True, "n": 2,
                        "messages": [{"role": "user", "content": "hi"}]}
                call = original("POST", f"{server.base_url}/primary/chat/completions",
                                [("authorization", "Bearer sk-client-0001")],
                                json.dumps(body).encode(), dispatcher.table)
                result = await dispatcher.run(call)
                delivery = result.delivery
                assert isinstance(delivery, Committed)
                got = delivery.first + b"".join([c async for c in delivery.rest])
                await delivery.aclose()
                await dispatcher.transport.aclose()
                result.conclude()
            else:
                result, got = await run(server, dispatcher, CHAT)
            answer = assemble(CHAT, got)
            assert answer is not None and answer.error is not None
            assert TEXT.startswith(answer.text) and answer.text != TEXT
            assert result.outcome is CallOutcome.BROKEN
            assert not [s for s in server.seen if "/backup/" in s.path]
    asyncio.run(go())


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(1, 4000), max_size=12), how=st.sampled_from(["error", "garbage"]))
def test_an_error_or_garbage_after_commit_is_caught_however_the_reads_split_it(
        cuts: list[int], how: str) -> None:
    """A read is looked at event by event only when its bytes may hold a
    break: an error event or garbage split over reads anywhere — "err" in one,
    "or" in the next; a block begun in a read that looked suspicious and ended
    in one that does not — is still caught, and never reaches the client."""
    stream = answer_stream(CHAT, TEXT, usage=False)
    at = stream.index(b"lazy")
    boundary = stream.rfind(b"\n\n", 0, at) + 2
    bad = sse({"error": {"message": "overloaded", "type": "server_error"}}) if how == "error" \
        else b"data: <html>oops</html>\n\n"
    sent = stream[:boundary] + bad
    points = sorted({c % len(sent) for c in cuts} | {0, len(sent)})
    pieces = [sent[a:b] for a, b in zip(points, points[1:]) if b > a]
    backup = ScriptedReply(200, [answer_stream(CHAT, TEXT[len(delivered_text(
        stream[:boundary])):], usage=False)])
    dispatcher = wire("""
providers:
  primary: {base_url: "https://primary.example/v1"}
  backup: {base_url: "https://backup.example/v1", keys: [sk-backup-0001]}
fallbacks: {"*": [backup/*]}
""", Clock(), ScriptedTransport(ScriptedReply(200, pieces), backup))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    call = recognise("POST", "https://primary.example/v1/chat/completions",
                     [("authorization", "Bearer sk-client-0001")], json.dumps(body).encode(),
                     dispatcher.table)

    async def go() -> tuple[Result, bytes]:
        result = await dispatcher.run(call)
        delivery = result.delivery
        assert isinstance(delivery, Committed)
        got = delivery.first + b"".join([chunk async for chunk in delivery.rest])
        await delivery.aclose()
        result.conclude()
        return result, got
    result, got = asyncio.run(go())
    answer = one_answer(CHAT, got)
    assert answer.error is None and answer.text == TEXT, (answer, str(result.trail))
    assert b"overloaded" not in got and b"oops" not in got
    assert result.outcome is CallOutcome.RESCUED


def delivered_text(stream: bytes) -> str:
    answer = assemble(CHAT, stream)
    assert answer is not None
    return answer.text


SHORT = "The quick brown fox"


@pytest.mark.parametrize("kind", ["rephrases", "prefill"])
@pytest.mark.parametrize("upstream", [CHAT, RESPONSES, MESSAGES])
def test_a_continuation_that_ends_inside_the_delivered_text_is_no_whole_answer(
        kind: str, upstream: Protocol) -> None:
    """A backup whose whole answer is shorter than what the client already
    has (a restart, or a prefill answered afresh) finishes on a text the
    splice refuses: the client gets the clean error, never a finish on a cut
    text (found by a second read: chat clients got `[DONE]` and `rescued`)."""
    at = answer_stream(CHAT, TEXT).index(b"lazy")

    def handler(seen: Seen) -> Script:
        if "/primary/" in seen.path:
            return broken(CHAT, "cut", at, json.loads(seen.body))
        return Script.sse([answer_stream(upstream, SHORT)])

    async def go() -> None:
        async with LoopServer(handler) as server:
            result, got = await run(server, setup(server, kind, upstream), CHAT)
            answer = one_answer(CHAT, got)
            assert answer.error is not None and TEXT.startswith(answer.text), answer
            assert result.outcome is CallOutcome.BROKEN
    asyncio.run(go())


def test_the_turn_after_a_rescued_responses_answer_replays_its_history() -> None:
    """The spliced answer is no one provider's: its follow-up is not sent to
    the backup with a `previous_response_id` the backup never made."""
    at = answer_stream(RESPONSES, TEXT).index(b"lazy")
    handler = breaking(RESPONSES, "cut", at, "prefill")

    async def go() -> None:
        async with LoopServer(handler) as server:
            dispatcher = setup(server, "prefill", RESPONSES, client=RESPONSES)
            result, got = await run(server, dispatcher, RESPONSES)
            assert result.outcome is CallOutcome.RESCUED
            one_answer(RESPONSES, got)
            rid = [e.json() for e in SseParser().feed(got)][-1]["response"]["id"]
            again = setup_again(server, dispatcher)
            body = {"model": "m", "stream": True, "input": "more", "previous_response_id": rid}
            call = recognise("POST", f"{server.base_url}/primary/responses",
                             [("authorization", "Bearer sk-client-0001")],
                             json.dumps(body).encode(), again.table)
            asked = len(server.seen)
            follow = await again.run(call)
            if isinstance(follow.delivery, Committed):
                await follow.delivery.aclose()
            await again.transport.aclose()
            for seen in server.seen[asked:]:
                sent = json.loads(seen.body)
                assert "previous_response_id" not in sent  # replayed: no one holds that id
                assert any(isinstance(i, dict) and i.get("role") == "assistant"
                           for i in sent["input"]), sent["input"]
    asyncio.run(go())
