"""One huge SSE event must cost what its size costs, and no more.

A provider may send a 10 MB event (a whole answer in one chunk, a long tool
argument). Reading it must not hold state per byte, or the proxy stalls for
seconds and every other call with it. Measured as memory held while reading
(tracemalloc: deterministic), never as time; the figures are printed by
scripts/bench_big_event.py.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable

import pytest

from switchback.protocols.metered import SCANNED, Metered
from switchback.protocols.spec import spec
from switchback.protocols.sse import Event, SseParser
from switchback.vocabulary import Protocol

SIZE = 1 << 20


def text(size: int) -> str:
    """Escapes every few bytes, as text with quotes and newlines (or JSON tool arguments) has."""
    return ('He said "fine" and left.\n' * (size // 25 + 1))[:size]


TEXT = text(SIZE)


def huge(protocol: Protocol, content: str = TEXT) -> bytes:
    if protocol is Protocol.CHAT:
        payload = {"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": content}, "finish_reason": None}]}
        return f"data: {json.dumps(payload)}\n\n".encode()
    payload = {"type": "response.output_text.delta", "delta": content, "sequence_number": 3}
    return f"event: response.output_text.delta\ndata: {json.dumps(payload)}\n\n".encode()


def peak_beyond(work: Callable[[], object]) -> int:
    """Bytes allocated at the peak of `work`, beyond what was held before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        work()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("protocol", [Protocol.CHAT, Protocol.RESPONSES])
def test_metering_a_large_event_holds_no_state_per_byte(protocol):
    """The largest event whose text is still scanned (a larger one is counted
    whole: `test_a_huge_event_is_counted_unscanned`)."""
    content = text(SCANNED * 8 // 10)  # escaped, it grows by an eighth
    raw = huge(protocol, content)
    assert len(raw) <= SCANNED
    meter = Metered(spec(protocol).passthrough(), protocol)
    out = b""

    def feed() -> None:
        nonlocal out
        out = meter.feed(Event(raw, len(raw) - 2))

    # The answer goes on whole, its copy for the client included; a scan of
    # the text that keeps backtracking state per byte held ~140 bytes per byte.
    assert peak_beyond(feed) < 3 * len(raw)
    assert out == raw
    assert meter.text_bytes == len(json.dumps(content)) - 2  # the text as sent, escapes and all


@pytest.mark.parametrize("protocol", [Protocol.CHAT, Protocol.RESPONSES])
def test_a_huge_event_is_counted_unscanned(protocol):
    """A huge event is nearly all text: counted by its size, no scan holds up
    the other streams while it passes."""
    raw = huge(protocol)
    meter = Metered(spec(protocol).passthrough(), protocol)
    assert meter.feed(Event(raw, len(raw) - 2)) == raw
    assert meter.text_bytes == len(raw)


def test_reading_a_huge_event_holds_a_few_copies_of_it_at_most():
    raw = huge(Protocol.CHAT)
    parser = SseParser()
    events: list[Event] = []

    def read() -> None:
        for start in range(0, len(raw), 1 << 16):
            events.extend(parser.feed(raw[start:start + (1 << 16)]))
        assert events[0].json()["choices"][0]["delta"]["content"] == TEXT

    assert peak_beyond(read) < 6 * len(raw)
    assert [e.raw for e in events] == [raw]
