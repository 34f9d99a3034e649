"""A committed stream a client can read to its proper end, whatever the
upstream does at the edges — checked with the openai SDK's own stream parser.

- A head that only pings is bounded by `first_byte`: keepalives show the
  connection lives, not that an answer is coming; the call moves on.
- A stream that ends inside a block ends on a fresh line: a whole last event
  (`data: [DONE]` without its blank line) is kept and terminated, a fragment
  or garbage is dropped, and the error that follows is read as an error.
- An answer that completed but lost its terminator (`[DONE]`, or for a
  translated chat upstream the usage chunk) gets its protocol's end, once.
- A block the SSE standard does not dispatch (an `event:` line alone) is left
  out: the SDK would fail to parse it. Comments stay.

In-process through the gate and delivery (by example and over random
chunkings) and through the dispatcher against a loopback server; end to end
through mitmdump with the real SDK in tests/e2e/test_stream_integrity_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import ServerSentEvent, SSEDecoder
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from support.fakeprovider import CHAT as CHAT_PATH
from support.fakeprovider import chat_events, response_events, sse, sse_bytes
from support.engine import wire
from support.loopserver import LoopServer, Script
from switchback.engine.delivery import Committed, deliver, first_bytes
from switchback.engine.gate import Head, read_head
from switchback.protocols.bridge import Bridge
from switchback.protocols.sse import SseParser
from switchback.recognise import recognise
from switchback.vocabulary import FailureKind, Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES
PAIRS = [(CHAT, CHAT), (RESPONSES, RESPONSES), (RESPONSES, CHAT), (CHAT, RESPONSES)]
PAIR_IDS = ["chat", "responses", "chat upstream, responses client",
            "responses upstream, chat client"]
TEXT = "one two three four five"
EVENTS = {CHAT: chat_events("m", TEXT, usage=True), RESPONSES: response_events("m", TEXT)}
# The last event of each upstream's answer before its terminal event(s): the
# chat chunk with the finish_reason, the Responses output_item.done.
FINISH = {CHAT: -3, RESPONSES: -2}
COMMITTED = 4  # blocks after which every upstream stream has shown content
TERMINALS = {"response.completed", "response.incomplete", "response.failed"}
GARBAGE = b"\x00\x01garbage"
# Blocks the SSE standard does not dispatch (fields, no data) and comments, which stay.
UNDISPATCHED = [b"event: ping", b"id: 7", b"retry: 100", b"event: x\nid: 1", GARBAGE]
COMMENTS = [b": ping", b": OPENROUTER PROCESSING"]


# ------------------------------------------------------------------ helpers


def blocks(upstream: Protocol, eol: str = "\n") -> list[bytes]:
    return [sse(event, eol) for event in EVENTS[upstream]]


async def engine(pieces: list[bytes], client: Protocol, upstream: Protocol,
                 fault: BaseException | None = None) -> bytes:
    """What a client receives of an upstream stream arriving as `pieces`,
    then ending — or breaking with `fault` — through the gate and delivery."""
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
               **({"input": "x"} if client is RESPONSES else {"messages": []})}
    bridge = Bridge(client, upstream, request, json.dumps(request).encode(),
                    response_id="resp_fixed")
    bridge.body("m", "localhost")

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
        if fault is not None:
            raise fault

    source, parser, head = chunks(), SseParser(), Head(upstream)
    await read_head(source, parser, head, lambda: None)
    assert head.failure is None, head.failure
    shaper = bridge.shaper()
    first, _ = first_bytes(head, shaper, lambda b: b)
    return first + b"".join([piece async for piece in deliver(source, parser, shaper,
                                                              lambda b: b, lambda: None)])


def delivered(pieces: list[bytes], client: Protocol, upstream: Protocol,
              fault: BaseException | None = None) -> bytes:
    return asyncio.run(engine(pieces, client, upstream, fault))


def decoded(body: bytes) -> list[ServerSentEvent]:
    """The events the openai SDK's SSE decoder dispatches from a body."""
    return list(SSEDecoder().iter_bytes(iter([body])))


def sdk_read(body: bytes, client: Protocol) -> tuple[list, openai.APIError | None]:
    """What the openai SDK's `Stream` makes of a streamed answer body: its
    items, and the error an error event raised. Anything else it raises
    (a JSONDecodeError on an event it cannot parse) fails the test."""
    items: list = []
    cast = ChatCompletionChunk if client is CHAT else ResponseStreamEvent
    with openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1") as sdk:
        response = httpx.Response(200, content=body,
                                  headers={"content-type": "text/event-stream"},
                                  request=httpx.Request("POST", "http://127.0.0.1:9/v1/x"))
        try:
            for item in openai.Stream(cast_to=cast, response=response, client=sdk):
                items.append(item)
        except openai.APIError as error:
            return items, error
    return items, None


def chat_content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def assert_ends_properly(body: bytes, client: Protocol, answered: bool) -> None:
    """The client's protocol's end, exactly once and last: for a chat client
    one `[DONE]`, after an error the SDK raises unless the answer completed;
    for a Responses client one terminal event, completed iff answered."""
    items, error = sdk_read(body, client)
    events = decoded(body)
    if client is CHAT:
        assert [e.data for e in events].count("[DONE]") == 1 and events[-1].data == "[DONE]"
        if answered:
            assert error is None and chat_content(items) == TEXT
            assert [c.choices[0].finish_reason for c in items if c.choices][-1] == "stop"
        else:
            assert error is not None, "the client never saw the stream fail"
            assert "error" in json.loads(events[-2].data)
    else:
        assert error is None
        kinds = [item.type for item in items]
        assert len(TERMINALS.intersection(kinds)) == 1 and kinds[-1] in TERMINALS
        assert (kinds[-1] == "response.completed") is answered, kinds[-3:]


# ------------------------------------ 2: pings do not extend the wait for an answer


def test_pings_alone_are_a_timeout_after_first_byte_and_the_call_moves_on():
    """The primary answers 200 and then only pings, for longer than
    first_byte (1 s here): a timeout of that attempt; the fallback serves."""
    stream = sse_bytes(chat_events("m", TEXT, usage=True))

    async def go() -> None:
        async with LoopServer(lambda seen: Script.sse([b": ping\n\n"] * 60, pause=0.05)
                              ) as primary, LoopServer(lambda seen: Script.sse([stream])) as backup:
            d = wire(f"""
providers:
  primary: {{base_url: "{primary.base_url}"}}
  backup: {{base_url: "{backup.base_url}", keys: [sk-backup-0001]}}
fallbacks: {{"*": [backup/*]}}
timeouts: {{first_byte: 1s}}
""")
            body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                    "messages": []}
            call = recognise("POST", primary.base_url + CHAT_PATH, [],
                             json.dumps(body).encode(), d.table)
            try:
                result = await d.run(call)
                assert [a.kind for a in result.attempts] == [FailureKind.TIMEOUT, "200"]
                assert isinstance(result.delivery, Committed), result.trail
                try:
                    got = result.delivery.first + b"".join(
                        [chunk async for chunk in result.delivery.rest])
                finally:
                    await result.delivery.aclose()
                assert got == stream
            finally:
                await d.transport.aclose()
    asyncio.run(go())


# ---------------------------------------- 3: the end of a stream cut inside a block


TAILS = {"garbage": lambda events: GARBAGE,
         "cut inside an event": lambda events: events[COMMITTED][:25]}


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("client,upstream", PAIRS, ids=PAIR_IDS)
def test_a_stream_that_ends_in_a_fragment_ends_with_an_error_the_client_reads(client, upstream,
                                                                            tail):
    events = blocks(upstream)
    body = delivered([b"".join(events[:COMMITTED]), TAILS[tail](events)], client, upstream)
    assert GARBAGE not in body
    assert_ends_properly(body, client, answered=False)


@pytest.mark.parametrize("missing", [1, 2], ids=["blank line", "line end and blank line"])
@pytest.mark.parametrize("client,upstream", PAIRS, ids=PAIR_IDS)
def test_a_whole_last_event_without_its_blank_line_reaches_the_client(client, upstream,
                                                                     missing):
    stream = b"".join(blocks(upstream))
    body = delivered([stream[:-missing]], client, upstream)
    assert_ends_properly(body, client, answered=True)
    if client is upstream:  # terminated, and nothing else changed
        assert body == stream


# ----------------------------------------- 4: a finished answer without its terminator


FAULTS = {"end": None, "reset": ConnectionResetError(),
          "unfinished": aiohttp.ClientPayloadError("payload is not completed")}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("client", [CHAT, RESPONSES])
def test_an_answer_cut_after_its_finish_reason_gets_its_protocols_end(client, fault):
    """A chat upstream closes after the finish_reason chunk, before the usage
    chunk and `[DONE]`: the answer is complete, and the client's stream ends
    as a complete one."""
    events = blocks(CHAT)
    body = delivered([b"".join(events[:FINISH[CHAT] + 1])], client, CHAT, FAULTS[fault])
    assert_ends_properly(body, client, answered=True)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("client,upstream", PAIRS, ids=PAIR_IDS)
def test_a_whole_stream_ends_once_however_it_closes(client, upstream, fault):
    stream = b"".join(blocks(upstream))
    body = delivered([stream], client, upstream, FAULTS[fault])
    assert_ends_properly(body, client, answered=True)
    if client is upstream:
        assert body == stream  # no second [DONE], no failure after a completed response


# ------------------------------------------- 8: blocks no client parser dispatches


@pytest.mark.parametrize("block", UNDISPATCHED)
@pytest.mark.parametrize("client,upstream", PAIRS, ids=PAIR_IDS)
def test_a_block_without_data_is_left_out_and_comments_stay(client, upstream, block):
    events = blocks(upstream)
    extra = [block + b"\n\n", COMMENTS[0] + b"\n\n"]
    stream = b"".join(events[:COMMITTED] + extra + events[COMMITTED:])
    body = delivered([stream], client, upstream)
    assert_ends_properly(body, client, answered=True)
    assert block not in body and COMMENTS[0] in body
    if client is upstream:
        assert body == stream.replace(extra[0], b"")


# ------------------------------------------------------------- as a property


ENDINGS = ["whole", "unterminated", "after finish", "cut inside an event", "garbage"]


@st.composite
def upstream_streams(draw: st.DrawFn, upstream: Protocol) -> tuple[bytes, str, bytes]:
    """A stream with comments and undispatched blocks mixed in after its
    head, ended one of the ways upstreams end: (the stream, how it ended,
    what a pass-through client of its whole form gets)."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    events = blocks(upstream, eol)
    ending = draw(st.sampled_from(ENDINGS))
    if ending == "after finish":
        events = events[:len(events) + FINISH[upstream] + 1]
    elif ending in ("cut inside an event", "garbage"):
        at = draw(st.integers(COMMITTED, len(events) + FINISH[upstream]))
        # Cut before the closing brace at the latest: a fragment, never a whole event.
        fragment = events[at][:draw(st.integers(1, len(events[at]) - 2 * len(eol) - 1))]
        events = events[:at] + [fragment if ending != "garbage" else GARBAGE]
    blocks_kept = [(event, True) for event in events]
    for _ in range(draw(st.integers(0, 4))):
        block = draw(st.sampled_from(UNDISPATCHED + COMMENTS))
        block = block.replace(b"\n", eol.encode()) + (eol * 2).encode()
        at = draw(st.integers(COMMITTED, len(blocks_kept) - 1))  # never after the last block
        blocks_kept.insert(at, (block, block.startswith(b":")))
    stream = b"".join(block for block, _ in blocks_kept)
    if ending == "unterminated":
        stream = stream[:-draw(st.integers(1, 2 * len(eol)))]
    return stream, ending, b"".join(block for block, kept in blocks_kept if kept)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)]) if data[a:b]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), pair=st.sampled_from(PAIRS), broken=st.booleans(),
       points=st.one_of(st.lists(st.integers(0, 10_000), max_size=40), st.just([]),
                        st.just(list(range(1, 10_000)))))
def test_every_stream_ends_once_in_a_form_the_sdk_reads_however_cut(data, pair, broken,
                                                                   points):
    client, upstream = pair
    stream, ending, kept = data.draw(upstream_streams(upstream))
    fault = ConnectionResetError() if broken else None
    body = delivered(cut(stream, points), client, upstream, fault)
    assert body == delivered([stream], client, upstream, fault)
    answered = ending in ("whole", "unterminated") or (ending == "after finish"
                                                       and upstream is CHAT)
    assert_ends_properly(body, client, answered)
    if client is upstream and ending == "whole":
        assert body == kept  # byte for byte, less only what no parser dispatches
