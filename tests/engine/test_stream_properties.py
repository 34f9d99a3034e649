"""Stream delivery as a property: whatever the network does to the bytes,
the client gets every event, in order — byte-identical when nothing is
translated, and the same translation however the upstream's bytes were cut.

Recorded streams of every protocol (text with multi-byte characters, tool
calls, signed thinking, usage), with LF, CRLF or CR line ends, keepalive comments and pings
mixed in, cut at random points — one byte at a time, all in one read, inside
a UTF-8 sequence, between CR and LF. First through the engine's gate and
delivery alone, then through the real upstream client with the bytes
compressed on the wire.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.fakeprovider import (chat_events, chat_tool_events, compressor, response_events,
                                  response_tool_events, sse)
from support.engine import wire
from support.fakemessages import message_events, signed_for
from support.loopserver import LoopServer, Script
from switchback.protocols.usage import Usage
from switchback.engine.delivery import Committed, deliver, first_bytes
from switchback.engine.gate import Head, read_head
from switchback.protocols.bridge import Bridge
from switchback.protocols.spec import spec
from switchback.protocols.sse import SseParser
from switchback.recognise import recognise
from switchback.vocabulary import Protocol

CHAT, RESPONSES, MESSAGES = Protocol.CHAT, Protocol.RESPONSES, Protocol.MESSAGES
TEXT = "héllo wörld — 你好 🎉 done"
RECORDED = {
    CHAT: [chat_events("m", TEXT, usage=True), chat_events("m", TEXT, usage=False),
           chat_tool_events("m", "get_weather", usage=True)],
    RESPONSES: [response_events("m", TEXT), response_tool_events("m", "get_weather")],
    MESSAGES: [message_events("m", TEXT), message_events("m", TEXT, signed_for("k")),
               message_events("m", "", signed_for("k"), "get_weather")],
}
KEEPALIVES = [b": keepalive", b": OPENROUTER PROCESSING", b'event: ping\ndata: {"type":"ping"}']
EOLS = ["\n", "\r\n", "\r"]


@st.composite
def upstream_streams(draw: st.DrawFn, protocol: Protocol) -> bytes:
    """A recorded stream with its line ends and interleaved keepalives."""
    events = draw(st.sampled_from(RECORDED[protocol]))
    eol = draw(st.sampled_from(EOLS))
    blocks = [sse(event, eol) for event in events]
    for _ in range(draw(st.integers(0, 3))):
        # Keepalives anywhere after the head has shown content: before it they
        # are held with the head, and a stream they end is no answer.
        at = draw(st.integers(3, len(blocks) - 1))
        keepalive = draw(st.sampled_from(KEEPALIVES)).replace(b"\n", eol.encode())
        blocks.insert(at, keepalive + (eol * 2).encode())
    return b"".join(blocks)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` in pieces at the given points (each taken modulo its length)."""
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)]) if data[a:b]]


cuts = st.one_of(
    st.lists(st.integers(0, 10_000), max_size=60),  # anywhere
    st.just(list(range(1, 10_000))),  # one byte at a time
    st.just([]),  # all in one read
)


async def chunks_of(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def delivered(pieces: list[bytes], client: Protocol, upstream: Protocol,
                    usage_asked: bool = True) -> bytes:
    """What the client receives of an upstream stream arriving as `pieces`."""
    return (await metered(pieces, client, upstream, usage_asked))[0]


async def metered(pieces: list[bytes], client: Protocol, upstream: Protocol,
                  usage_asked: bool = True) -> tuple[bytes, Usage | None]:
    """What the client receives, and the usage the stream's meter read."""
    request = {"model": "m", "stream": True,
               **({"stream_options": {"include_usage": True}} if usage_asked else {}),
               **({"input": "x"} if client is RESPONSES else {"messages": []})}
    bridge = Bridge(client, upstream, request, json.dumps(request).encode(),
                    response_id="resp_fixed")
    bridge.body("m", "localhost")
    chunks, parser, head = chunks_of(pieces), SseParser(), Head(upstream)
    await read_head(chunks, parser, head, lambda: None)
    assert head.failure is None, head.failure
    shaper = bridge.shaper()
    first, _ = first_bytes(head, shaper, lambda b: b)
    rest = deliver(chunks, parser, shaper, lambda b: b, lambda: None)
    return first + b"".join([piece async for piece in rest]), shaper.usage


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), protocol=st.sampled_from([CHAT, RESPONSES, MESSAGES]), points=cuts)
def test_a_passed_through_stream_is_byte_identical_however_it_is_cut(data, protocol, points):
    stream = data.draw(upstream_streams(protocol))
    assert asyncio.run(delivered(cut(stream, points), protocol, protocol)) == stream


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), upstream=st.sampled_from([CHAT, RESPONSES]), points=cuts)
def test_a_translated_stream_is_the_same_however_it_is_cut(data, upstream, points):
    stream = data.draw(upstream_streams(upstream))
    client = spec(upstream).switch
    whole = asyncio.run(delivered([stream], client, upstream))
    assert asyncio.run(delivered(cut(stream, points), client, upstream)) == whole
    events = [line for line in whole.decode().splitlines() if line.startswith("data: {")]
    if client is RESPONSES:
        assert json.loads(events[-1][6:])["type"] == "response.completed"
    else:
        assert whole.rstrip().endswith(b"data: [DONE]")
    if b"get_weather" not in stream:
        texts = []
        for line in events:
            payload = json.loads(line[6:])
            if client is RESPONSES and payload["type"] == "response.output_text.delta":
                texts.append(payload["delta"])
            if client is CHAT and payload.get("choices"):
                texts.append(payload["choices"][0]["delta"].get("content") or "")
        assert "".join(texts) == TEXT


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eol=st.sampled_from(EOLS), points=cuts, tools=st.booleans())
def test_usage_asked_on_a_chat_clients_behalf_never_reaches_it_however_cut(eol, points, tools):
    """The client gets exactly the stream it would have had without usage,
    and the meter still reads the usage."""
    events = chat_tool_events if tools else chat_events
    subject = "get_weather" if tools else TEXT
    asked = b"".join(sse(event, eol) for event in events("m", subject, usage=True))
    plain = b"".join(sse(event, eol) for event in events("m", subject, usage=False))
    got, usage = asyncio.run(metered(cut(asked, points), CHAT, CHAT, usage_asked=False))
    assert got == plain
    assert usage == Usage(5, 3, model="m")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), client=st.sampled_from([CHAT, RESPONSES]),
       upstream=st.sampled_from([CHAT, RESPONSES]), points=cuts)
def test_the_meter_reads_the_providers_usage_however_the_stream_is_cut(data, client, upstream,
                                                                       points):
    stream = data.draw(upstream_streams(upstream))
    _, usage = asyncio.run(metered(cut(stream, points), client, upstream))
    reported = b'"usage": {' in stream
    assert usage == (Usage(5, 3, model="m") if reported else None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), points=cuts)
def test_the_meter_reads_a_messages_streams_usage_however_cut(data, points):
    """Input (with the cache's reads and writes) from message_start, output
    from message_delta, delivered byte for byte."""
    stream = data.draw(upstream_streams(MESSAGES))
    got, usage = asyncio.run(metered(cut(stream, points), MESSAGES, MESSAGES))
    assert got == stream
    assert usage == Usage(11, 3, cached=2, model="m", cache_write=4)


# ---------------------------------------------- through the real client, compressed


def compressed(stream: bytes, encoding: str, rng: random.Random) -> list[bytes]:
    """The stream compressed as a streaming proxy does it: flushed at random
    boundaries, then the compressed bytes cut at other random points."""
    shrink, end = compressor(encoding)
    wire = b"".join(shrink(piece) for piece in cut(stream, [rng.randrange(len(stream))
                                                            for _ in range(rng.randrange(8))]))
    wire += end()
    return cut(wire, [rng.randrange(len(wire)) for _ in range(rng.randrange(12))])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), protocol=st.sampled_from([CHAT, RESPONSES, MESSAGES]),
       encoding=st.sampled_from(["identity", "gzip", "deflate", "br", "zstd"]),
       seed=st.integers(0, 2**32))
def test_compressed_streams_arrive_byte_identical_through_the_engine(data, protocol, encoding,
                                                                     seed):
    stream = data.draw(upstream_streams(protocol))
    rng = random.Random(seed)
    pieces = compressed(stream, encoding, rng) if encoding != "identity" \
        else cut(stream, [rng.randrange(len(stream)) for _ in range(10)])
    headers = {} if encoding == "identity" else {"content-encoding": encoding}

    async def go() -> bytes:
        async with LoopServer(lambda seen: Script.sse(pieces, pause=0.0005, **headers)) as server:
            d = wire(f'providers: {{p: {{base_url: "{server.base_url}", '
                     f'protocol: {"messages" if protocol is MESSAGES else "auto"}}}}}\n')
            upstream = d.transport
            body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                    **({"input": "x"} if protocol is RESPONSES else {"messages": []})}
            call = recognise("POST", f"{server.base_url}{spec(protocol).path}", [],
                             json.dumps(body).encode(), d.table)
            try:
                result = await d.run(call)
                assert isinstance(result.delivery, Committed), result.trail
                try:
                    return result.delivery.first + b"".join(
                        [chunk async for chunk in result.delivery.rest])
                finally:
                    await result.delivery.aclose()
            finally:
                await upstream.aclose()

    assert asyncio.run(go()) == stream
