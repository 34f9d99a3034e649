"""The dispatcher in-process with its real upstream client against a raw
loopback server, and an injected clock: rotation, proactive cooldown,
exhaustion, protocol switches and their memory, masking, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from support.loopserver import LoopServer, Script, Seen
from support.fakeprovider import chat_events, response_events, sse_bytes
from switchback.protocols.usage import Usage
from switchback.engine.delivery import Committed, deliver
from switchback.engine.gate import Head
from switchback.engine.dispatch import Dispatcher
from switchback.engine.results import Answer, Result
from switchback.engine.transport import Transport
from support.engine import Clock, wire
from switchback.state.cooldowns import key_model_scope, key_scope
from switchback.protocols import sse
from switchback.protocols.shapers import ChatPassthrough, ResponsesPassthrough
from switchback.protocols.sse import EventTooLarge, SseParser
from switchback.recognise import fingerprint, recognise
from switchback.vocabulary import CallOutcome, Protocol, Reason

KEY_ONE, KEY_TWO = "sk-key-one-0001", "sk-key-two-0002"
OPEN: list[Transport] = []  # upstream clients to close when the test's server stops




def dispatcher(server: LoopServer, clock: Clock, extra: str = "") -> Dispatcher:
    d = wire(f"""
providers:
  p: {{base_url: "{server.base_url}", keys: [{KEY_ONE}, {KEY_TWO}]}}
timeouts: {{first_byte: 1s}}
{extra}""", clock)
    OPEN.append(d.transport)
    return d


def calling(server: LoopServer, d: Dispatcher, path: str = "/chat/completions",
            **body) -> Callable[[], Awaitable[Result]]:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    if path == "/responses":
        payload = {"model": "m", "input": "hi", **body}
    call = recognise("POST", server.base_url + path, [], json.dumps(payload).encode(), d.table)
    return lambda: d.run(call)


async def body_of(result: Result) -> bytes:
    assert isinstance(result.delivery, Committed)
    try:
        return result.delivery.first + b"".join([chunk async for chunk in result.delivery.rest])
    finally:
        await result.delivery.aclose()


def serve(handler: Callable[[Seen], Script],
          test: Callable[[LoopServer], Awaitable[None]]) -> None:
    async def go() -> None:
        async with LoopServer(handler) as server:
            try:
                await test(server)
            finally:
                while OPEN:
                    await OPEN.pop().aclose()
    asyncio.run(go())


def ok(_: Seen) -> Script:
    return Script.json(200, {"choices": []})


def test_keys_rotate_least_recently_used():
    clock = Clock()

    def handler(seen: Seen) -> Script:
        clock.now += 1
        return ok(seen)

    async def test(server: LoopServer) -> None:
        d = dispatcher(server, clock)
        run = calling(server, d)
        for _ in range(4):
            await run()
        assert [s.key for s in server.seen] == [KEY_ONE, KEY_TWO, KEY_ONE, KEY_TWO]
    serve(handler, test)


def test_success_with_remaining_zero_puts_the_key_aside():
    clock = Clock()

    def handler(seen: Seen) -> Script:
        clock.now += 1
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"} \
            if seen.key == KEY_ONE else {}
        return Script.json(200, {"choices": []}, **headers)

    async def test(server: LoopServer) -> None:
        d = dispatcher(server, clock)
        run = calling(server, d)
        for _ in range(3):
            await run()
        # KEY_ONE emptied its bucket on the first call: the next two go to KEY_TWO, no 429.
        assert [s.key for s in server.seen] == [KEY_ONE, KEY_TWO, KEY_TWO]
        cooling = d.learned.health.cooling(key_scope("p", fingerprint(KEY_ONE)))
        assert cooling.reason is Reason.REMAINING_ZERO
    serve(handler, test)


def test_a_429_moves_to_the_next_key_and_exhaustion_says_when_without_the_key():
    def handler(seen: Seen) -> Script:
        return Script.json(429, {"error": {"message": f"Rate limit reached for {seen.key}"}},
                           **{"retry-after": "30"})

    async def test(server: LoopServer) -> None:
        d = dispatcher(server, Clock())
        result = await calling(server, d)()
        answer = result.delivery
        assert isinstance(answer, Answer) and answer.status == 429
        assert result.outcome is CallOutcome.EXHAUSTED
        assert dict(answer.headers)["retry-after"] == "30"
        assert dict(answer.headers)["retry-after-ms"] == "30000"
        assert KEY_ONE.encode() not in answer.body and KEY_TWO.encode() not in answer.body
        assert f"<key {fingerprint(KEY_ONE)}>".encode() in answer.body
        assert all(KEY_ONE.encode() not in a.response_body for a in result.attempts)
        for key in (KEY_ONE, KEY_TWO):  # a rate limit cools the key for that model (#17)
            assert d.learned.health.cooling(key_model_scope("p", fingerprint(key), "m")) \
                is not None
    serve(handler, test)


def missing_chat(seen: Seen) -> Script:
    if seen.path.endswith("/chat/completions"):
        return Script.json(404, {"error": {"code": "unknown_url",
                                           "message": "Unknown request URL"}})
    return Script.json(200, {"id": "resp_1", "object": "response", "output": []})


def test_a_protocol_switch_applies_to_the_providers_other_keys():
    def handler(seen: Seen) -> Script:
        if seen.key == KEY_ONE and seen.path.endswith("/responses"):
            return Script.json(429, {"error": {"message": "Rate limit reached"}})
        return missing_chat(seen)

    async def test(server: LoopServer) -> None:
        await calling(server, dispatcher(server, Clock()))()
        assert [(s.path, s.key) for s in server.seen] == [
            ("/v1/chat/completions", KEY_ONE), ("/v1/responses", KEY_ONE),
            ("/v1/responses", KEY_TWO)]
    serve(handler, test)


def test_a_switch_is_remembered_for_the_clients_protocol_only():
    async def test(server: LoopServer) -> None:
        d = dispatcher(server, Clock())
        await calling(server, d)()  # chat: 404, then responses
        await calling(server, d)()  # chat again: straight to responses
        await calling(server, d, "/responses")()  # a Responses client: its own endpoint
        assert [s.path for s in server.seen] == [
            "/v1/chat/completions", "/v1/responses", "/v1/responses", "/v1/responses"]
    serve(missing_chat, test)


def test_a_chat_client_is_not_translated_after_responses_calls():
    async def test(server: LoopServer) -> None:
        d = dispatcher(server, Clock())
        await calling(server, d, "/responses")()
        await calling(server, d)()
        assert [s.path for s in server.seen] == ["/v1/responses", "/v1/chat/completions"]
    serve(ok, test)


STREAM = sse_bytes(chat_events("m", "one two three", usage=True))


@pytest.mark.parametrize("pieces", [
    [STREAM], [STREAM[:1], STREAM[1:]], [bytes([b]) for b in STREAM[:200]] + [STREAM[200:]],
], ids=["whole", "first byte apart", "byte by byte"])
def test_a_stream_is_delivered_byte_identical(pieces):
    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), stream=True,
                               stream_options={"include_usage": True})()
        assert await body_of(result) == STREAM
        assert result.delivery.meter.usage == Usage(5, 3, model="m")
    serve(lambda seen: Script.sse(pieces, pause=0.001), test)


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_usage_asked_for_a_chat_client_is_kept_from_it(options):
    """Asked for on the client's behalf, the usage chunk and every `"usage":null`
    are taken out again: the client gets the stream it asked for."""
    asked = sse_bytes(chat_events("m", "one two three", usage=True))
    plain = sse_bytes(chat_events("m", "one two three", usage=False))
    extra = {} if options is None else {"stream_options": options}

    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), stream=True, **extra)()
        assert await body_of(result) == plain
        assert result.delivery.meter.usage == Usage(5, 3, model="m")
        sent = json.loads(server.seen[0].body)
        assert sent["stream_options"] == {**(options or {}), "include_usage": True}
    serve(lambda seen: Script.sse([asked[i:i + 37] for i in range(0, len(asked), 37)]), test)


def test_without_resume_an_error_right_after_content_in_one_read_is_delivered_not_replayed():
    events = chat_events("m", "partial", usage=False)
    stream = sse_bytes(events[:2]) + b'data: {"error": {"message": "boom"}}\n\n'

    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock(), "resume: off"), stream=True)()
        body = await body_of(result)
        assert body.startswith(stream)  # every event, the error too; then a proper end
        assert body.endswith(b"data: [DONE]\n\n")
        assert len(server.seen) == 1
    serve(lambda seen: Script.sse([stream]), test)


def test_a_translated_stream_completes_whatever_the_chunking():
    stream = sse_bytes(response_events("m", "hello there"))

    def handler(seen: Seen) -> Script:
        if seen.path.endswith("/chat/completions"):
            return missing_chat(seen)
        return Script.sse([stream[i:i + 50] for i in range(0, len(stream), 50)])

    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), stream=True)()
        body = (await body_of(result)).decode()
        text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                       for line in body.splitlines()
                       if line.startswith("data: {") and json.loads(line[6:])["choices"])
        assert text == "hello there" and body.rstrip().endswith("data: [DONE]")
    serve(handler, test)


def test_an_oversized_event_fails_the_attempt_with_a_clear_trail(monkeypatch):
    monkeypatch.setattr(sse, "MAX_EVENT", 1000)

    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), stream=True)()
        assert result.outcome is CallOutcome.EXHAUSTED
        assert "event too large" in str(result.trail)
    serve(lambda seen: Script.sse([b"data: " + b"x" * 5000], pause=1), test)


def test_cancelling_a_call_closes_its_upstream_at_once():
    async def test(server: LoopServer) -> None:
        task = asyncio.ensure_future(calling(server, dispatcher(server, Clock()), stream=True)())
        for _ in range(100):
            if server.seen:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if server.hangups:
                break
            await asyncio.sleep(0.01)
        assert server.hangups == 1
    serve(lambda seen: Script.sse([STREAM], delay=30), test)


def test_the_first_byte_timeout_moves_on():
    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), stream=True)()
        assert result.outcome is CallOutcome.EXHAUSTED
        assert "timeout" in str(result.trail)
    serve(lambda seen: Script.sse([STREAM], delay=3), test)


def test_odd_choices_in_a_translated_head_do_not_break_the_stream():
    events = chat_events("m", "fine", usage=True)
    stream = b'data: {"choices": [null, "x"]}\n\n' + sse_bytes(events)

    def handler(seen: Seen) -> Script:
        if seen.path.endswith("/responses"):
            return Script.json(404, {"error": {"code": "unknown_url",
                                               "message": "Unknown request URL"}})
        return Script.sse([stream])

    async def test(server: LoopServer) -> None:
        result = await calling(server, dispatcher(server, Clock()), "/responses", stream=True)()
        body = (await body_of(result)).decode()
        assert '"delta":"fine"' in body and "response.completed" in body
    serve(handler, test)


class Clumsy:
    """A shaper with a bug: it raises on the third event."""

    final = None

    def __init__(self) -> None:
        self.complete, self.seen = False, 0

    def feed(self, event) -> bytes:
        self.seen += 1
        if self.seen == 3:
            raise RuntimeError("a bug")
        return event.raw

    def finish(self) -> bytes:
        return b""

    def fail(self, message: str) -> bytes:
        return b"data: [FAILED]\n\n"


async def delivered(pieces, shaper, fault: BaseException | None = None) -> tuple[bytes, int]:
    """What `deliver` makes of `pieces` (and a fault after them); how often it completed."""
    completions = []

    async def chunks():
        for piece in pieces:
            yield piece
        if fault is not None:
            raise fault

    parser = SseParser()
    rest = deliver(chunks(), parser, shaper, lambda b: b, lambda: completions.append(1))
    return b"".join([piece async for piece in rest]), len(completions)


def test_a_bug_after_commit_still_ends_the_stream_in_the_clients_protocol():
    body, _ = asyncio.run(delivered([STREAM], Clumsy()))
    assert body.endswith(b"data: [FAILED]\n\n")


@pytest.mark.parametrize("fault", [aiohttp.ClientPayloadError("payload is not completed"),
                                   ConnectionResetError()], ids=["unfinished", "reset"])
def test_a_break_after_the_answer_completed_adds_no_failure(fault):
    body, completions = asyncio.run(delivered([STREAM], ChatPassthrough(), fault))
    assert body == STREAM and completions == 1
    responses = sse_bytes(response_events("m", "done"))
    body, completions = asyncio.run(delivered([responses], ResponsesPassthrough(), fault))
    assert body == responses and completions == 1


def test_a_break_before_the_answer_completed_ends_it_as_failed():
    body, completions = asyncio.run(delivered([STREAM[:300]], ChatPassthrough(),
                                              ConnectionResetError()))
    assert b"switchback_stream_broken" in body and body.endswith(b"data: [DONE]\n\n")
    assert completions == 0


def test_a_head_that_never_decides_is_bounded(monkeypatch):
    monkeypatch.setattr(sse, "MAX_EVENT", 1000)
    head = Head(Protocol.CHAT)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            head.take(SseParser().feed(b": keepalive " + b"x" * 50 + b"\n\n"))


def test_a_provider_that_refuses_stream_options_gets_the_call_without_them():
    """Strict providers (Mistral) answer 422 to the usage option Switchback
    adds: the call goes again without it, and later calls never carry it."""
    plain = sse_bytes(chat_events("m", "one two", usage=False))

    def handler(seen: Seen) -> Script:
        if b"stream_options" in seen.body:
            return Script.json(422, {"object": "error", "message": {"detail": [
                {"type": "extra_forbidden", "loc": ["body", "stream_options"],
                 "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error"})
        return Script.sse([plain])

    async def test(server: LoopServer) -> None:
        d = dispatcher(server, Clock())
        first = await calling(server, d, stream=True)()
        assert await body_of(first) == plain
        assert "422 (refuses stream_options; again without)" in str(first.trail)
        assert first.delivery.meter.usage is None  # none reported: the charge estimates
        second = await calling(server, d, stream=True)()
        assert await body_of(second) == plain
        assert [b"stream_options" in seen.body for seen in server.seen] == [True, False, False]
    serve(handler, test)
