"""Issue #17's failover policy, decided by the engine with a scripted
transport and a fake clock (the loop's own waits move that clock): no
sockets, no real sleeps.

1. a short hint on the addressed candidate is waited out, not fled;
2. a one-off 5xx or reset is retried once on the same candidate;
3. a 429 rate limit cools (key, model), account signals the key;
4. a scope cooling on our own backoff is probed, and back at once;
5. a prompt too long goes to the context fallbacks;
6. a 2xx or 3xx that is no answer is a failed attempt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from support.engine import Clock, ScriptedReply, ScriptedTransport, wire
from switchback.engine.delivery import Committed
from switchback.engine.dispatch import Dispatcher
from switchback.engine.results import Answer, Result
from switchback.recognise import fingerprint, recognise
from switchback.state.cooldowns import key_model_scope, key_scope
from switchback.vocabulary import CallOutcome, ProbeResult, Retry

KEYS = {"primary": "sk-primary-0001", "backup": "sk-backup-0001", "bigger": "sk-bigger-0001"}
CONFIG = """
providers:
  primary: {base_url: "https://primary.test/v1", keys: [sk-primary-0001]}
  backup: {base_url: "https://backup.test/v1", keys: [sk-backup-0001]}
  bigger: {base_url: "https://bigger.test/v1", keys: [sk-bigger-0001]}
fallbacks: {"*": [backup/*]}
"""


def ok(model: str = "m", text: str = "hi") -> ScriptedReply:
    return ScriptedReply(200, [json.dumps({
        "id": "c", "object": "chat.completion", "model": model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"}]}).encode()], "application/json")


def error(status: int, message: str = "boom", code: str | None = None,
          **headers: str) -> ScriptedReply:
    body = {"error": {"message": message, "type": "server_error", "code": code}}
    return ScriptedReply(status, [json.dumps(body).encode()], "application/json", **headers)


def page(status: int = 200, **headers: str) -> ScriptedReply:
    return ScriptedReply(status, [b"<html><body>Sign in</body></html>"], "text/html", **headers)


class Timed(ScriptedTransport):
    """A scripted transport that notes the (fake) time of every send."""

    def __init__(self, clock: Clock, *replies) -> None:
        super().__init__(*replies)
        self.clock, self.times = clock, []

    async def send(self, url, headers, body, read_timeout):
        self.times.append(self.clock())
        return await super().send(url, headers, body, read_timeout)

    def hosts(self) -> list[str]:
        return [url.split("//")[1].split(".")[0] for url, _, _ in self.sent]


class Routed:
    """A transport whose answer depends on the host and the (fake) time."""

    def __init__(self, clock: Clock, answer: Callable[[str, float], ScriptedReply]) -> None:
        self.clock, self.answer = clock, answer
        self.sent: list[tuple[str, float]] = []

    async def send(self, url, headers, body, read_timeout):
        host = url.split("//")[1].split(".")[0]
        self.sent.append((host, self.clock()))
        return self.answer(host, self.clock())

    async def aclose(self) -> None:
        pass


def call(d: Dispatcher, model: str = "m", **extra) -> Result:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    llm = recognise("POST", "https://primary.test/v1/chat/completions",
                    [("authorization", "Bearer sk-client")], json.dumps(body).encode(), d.table)
    return asyncio.run(d.run(llm))


def served_by(result: Result) -> str | None:
    return result.served_by.provider.name if result.served_by else None


def status_of(result: Result) -> int:
    assert isinstance(result.delivery, Answer)
    return result.delivery.status


# 1. A short Retry-After on the addressed candidate is honoured, not fled


def test_a_short_hint_on_the_addressed_provider_is_waited_out_then_retried():
    clock = Clock()
    transport = Timed(clock, error(429, "Rate limit reached", "rate_limit_exceeded",
                                   **{"retry-after": "2"}), ok())
    result = call(wire(CONFIG, clock, transport))
    assert served_by(result) == "primary" and transport.hosts() == ["primary", "primary"]
    assert transport.times[1] - transport.times[0] >= 2.0  # never before its hint
    assert str(result.trail) == "primary 429 (retry 2s) → waited 2.0s → primary 200"
    assert [a.retry for a in result.attempts] == [None, Retry.HINTED]


def test_a_hint_longer_than_max_wait_moves_on_at_once():
    clock = Clock()
    transport = Timed(clock, error(429, "Rate limit", "rate_limit_exceeded",
                                   **{"retry-after": "3"}), ok())
    result = call(wire(CONFIG, clock, transport))
    assert transport.hosts() == ["primary", "backup"] and transport.times[1] == transport.times[0]


def test_another_key_for_the_same_provider_and_model_is_rotated_to_at_once():
    clock = Clock()
    config = CONFIG.replace("keys: [sk-primary-0001]", "keys: [sk-primary-0001, sk-primary-0002]")
    transport = Timed(clock, error(429, "Rate limit", "rate_limit_exceeded",
                                   **{"retry-after": "2"}), ok())
    result = call(wire(config, clock, transport))
    assert served_by(result) == "primary" and transport.times[1] == transport.times[0]
    assert "waited" not in str(result.trail)


def test_a_second_failure_after_the_wait_moves_on():
    clock = Clock()
    limited = lambda: error(429, "Rate limit", "rate_limit_exceeded", **{"retry-after": "1"})
    transport = Timed(clock, limited(), limited(), ok())
    result = call(wire(CONFIG, clock, transport))
    assert transport.hosts() == ["primary", "primary", "backup"] and served_by(result) == "backup"


def test_a_fallback_candidates_hint_is_not_waited_for():
    clock = Clock()
    transport = Timed(clock, error(500), error(500),  # primary: retried once, then out
                      error(429, "Rate limit", "rate_limit_exceeded", **{"retry-after": "1"}),
                      ok())
    config = CONFIG.replace("[backup/*]", "[backup/*, bigger/*]")
    result = call(wire(config, clock, transport))
    assert transport.hosts() == ["primary", "primary", "backup", "bigger"]
    assert transport.times[3] == transport.times[2] and served_by(result) == "bigger"


# 2. A one-off 500 (or reset) is retried once on the same candidate


@pytest.mark.parametrize("failure", [error(500), error(502), error(503), error(504),
                                     ConnectionResetError("reset by peer")],
                         ids=["500", "502", "503", "504", "reset"])
def test_a_transient_failure_is_retried_once_on_the_same_candidate(failure):
    clock = Clock()
    transport = Timed(clock, failure, ok())
    result = call(wire(CONFIG, clock, transport))
    assert served_by(result) == "primary" and transport.hosts() == ["primary", "primary"]
    assert " → retried → primary 200" in str(result.trail)
    assert 0 < transport.times[1] - transport.times[0] < 1  # a short pause, on the fake clock
    assert result.attempts[1].retry is Retry.TRANSIENT


def test_a_hinted_5xx_is_not_retried_as_transient():
    clock = Clock()
    transport = Timed(clock, error(503, **{"retry-after": "30"}), ok())
    call(wire(CONFIG, clock, transport))
    assert transport.hosts() == ["primary", "backup"]


def test_a_scope_that_failed_recently_is_not_retried():
    clock = Clock()
    transport = Timed(clock, error(500), error(500), ok(),  # first call: retried, then backup
                      error(500), ok())
    d = wire(CONFIG, clock, transport)
    call(d)
    clock.advance(5)  # its cooldown is over; its failures are still recent
    result = call(d)
    assert transport.hosts() == ["primary", "primary", "backup", "primary", "backup"]
    assert "retried" not in str(result.trail)


def test_never_more_than_one_retry_per_call():
    clock = Clock()
    transport = Timed(clock, error(500), error(500), error(502), ok())
    d = wire(CONFIG, clock, transport)
    result = call(d)
    assert transport.hosts() == ["primary", "primary", "backup"]
    assert result.outcome is CallOutcome.EXHAUSTED and status_of(result) in (500, 502)


# 3. One model's 429 cools the key for that model only


def test_a_rate_limit_cools_the_key_for_that_model_only():
    clock = Clock()
    transport = Timed(clock, error(429, "Rate limit reached for a", "rate_limit_exceeded",
                                   **{"retry-after": "30"}), ok("a"),
                      ok("b"), ok("c"), ok("a"))
    d = wire(CONFIG, clock, transport)
    assert served_by(call(d, "a")) == "backup"
    assert served_by(call(d, "b")) == "primary" and served_by(call(d, "c")) == "primary"
    assert served_by(call(d, "a")) == "backup"  # still cooling for a
    fp = fingerprint(KEYS["primary"])
    health = d.learned.health
    assert health.cooling(key_model_scope("primary", fp, "a")) is not None
    assert health.cooling(key_scope("primary", fp)) is None


def test_an_account_signal_still_cools_the_whole_key():
    clock = Clock()
    transport = Timed(clock, error(429, "You exceeded your current quota",
                                   "insufficient_quota"), ok("a"), ok("b"))
    d = wire(CONFIG, clock, transport)
    assert served_by(call(d, "a")) == "backup"
    result = call(d, "b")
    assert served_by(result) == "backup" and "primary cooling" in str(result.trail)


# 4. A recovered provider is used again: probes


def test_a_provider_that_heals_is_back_within_the_probe_interval():
    """The issue's timeline: 503 for 60 s, then healthy; a call every 4 s."""
    clock = Clock()
    start = clock()
    transport = Routed(clock, lambda host, now: error(503, "unavailable")
                       if host == "primary" and now - start < 60 else ok())
    d = wire(CONFIG + "cooldown: {probe: 10s}\n", clock, transport)
    results = []
    for n in range(25):
        clock.now = start + 4 * n
        results.append((4 * n, call(d)))
    back = [at for at, result in results if served_by(result) == "primary"]
    assert back and back[0] - 60 <= 15  # back on the recovered provider within 15 s
    assert all(served_by(r) == "primary" for at, r in results if at >= back[0])
    assert all(r.outcome is CallOutcome.OK for _, r in results)  # served throughout
    # While it is dead, once its backoff outgrew the probe interval, it sees at
    # most one call per probe interval.
    dead = [at - start for host, at in transport.sent if host == "primary" and at - start < 60]
    late = [at for at in dead if at >= 20]
    assert all(b - a >= 10 for a, b in zip(late, late[1:])), dead
    probes = [a for _, r in results for a in r.attempts if a.probe is not None]
    assert probes and probes[-1].probe is ProbeResult.RECOVERED
    assert any("(probe)" in str(r.trail) for _, r in results)


def test_a_probe_that_fails_moves_the_call_on_without_delay():
    clock = Clock()
    transport = Timed(clock, error(500), error(500), ok(),  # cools primary (backoff 2 s)
                      error(500), ok())
    d = wire(CONFIG + "cooldown: {floor: 20s, probe: 5s}\n", clock, transport)
    call(d)
    clock.advance(6)
    result = call(d)
    assert transport.hosts()[-2:] == ["primary", "backup"]
    assert transport.times[-1] == transport.times[-2]
    assert str(result.trail).startswith("primary 500 (probe)")
    assert result.attempts[0].probe is ProbeResult.FAILED


def test_one_probe_at_a_time_per_scope():
    clock = Clock()
    transport = Timed(clock, error(500), error(500), ok())
    d = wire(CONFIG + "cooldown: {floor: 60s, probe: 5s}\n", clock, transport)
    call(d)
    clock.advance(6)

    async def two_at_once() -> list[Result]:
        gate = asyncio.Event()
        served = ScriptedReply(200, [b'{"choices": []}'], "application/json")

        async def slow_send(url, headers, body, read_timeout):
            transport.sent.append((url, list(headers), body))
            if "primary" in url:
                await gate.wait()
            return served if "primary" in url else ok()
        transport.send = slow_send
        body = json.dumps({"model": "m", "messages": []}).encode()
        calls = [recognise("POST", "https://primary.test/v1/chat/completions", [], body, d.table)
                 for _ in range(2)]
        first = asyncio.ensure_future(d.run(calls[0]))
        await asyncio.sleep(0)
        second = await d.run(calls[1])  # the probe is taken: skipped, to backup
        gate.set()
        return [await first, second]
    first, second = asyncio.run(two_at_once())
    assert served_by(first) == "primary" and served_by(second) == "backup"
    assert d.learned.health.cooling(("model", "primary", "m")) is None  # cleared at once


def test_a_providers_own_hint_is_never_probed_early():
    clock = Clock()
    transport = Timed(clock, error(503, "busy", **{"retry-after": "40"}), ok(), ok())
    d = wire(CONFIG + "cooldown: {probe: 5s}\n", clock, transport)
    call(d)
    clock.advance(20)
    result = call(d)
    assert transport.hosts() == ["primary", "backup", "backup"]
    assert "probe" not in str(result.trail)


# 5. Too long a prompt goes to a larger-context model


CONTEXT = CONFIG + 'context_fallbacks: {"m": [primary/*, bigger/gpt-4.1]}\n'
TOO_LONG = {
    "openai": (400, {"error": {"message": "This model's maximum context length is 128000 tokens.",
                               "type": "invalid_request_error",
                               "code": "context_length_exceeded"}}),
    "anthropic": (400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 "
                                                    "maximum"}}),
    "gemini": (400, [{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                "The input token count (1200000) exceeds the maximum number of "
                                "tokens allowed (1048576)."}}]),
    "mistral": (400, {"object": "error", "message": "Prompt contains 40000 tokens and 0 draft "
                      "tokens, too large for model with 32768 maximum context length",
                      "type": "invalid_request_message_error"}),
    "vllm": (400, {"object": "error", "message": "This model's maximum context length is 4096 "
                   "tokens. However, you requested 5000 tokens.", "type": "BadRequestError",
                   "code": 400}),
    "llama.cpp": (400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                  "message": "the request exceeds the available context size, "
                                             "try increasing it"}}),
}


@pytest.mark.parametrize("provider", TOO_LONG)
def test_a_prompt_too_long_goes_to_the_context_fallback(provider):
    status, body = TOO_LONG[provider]
    clock = Clock()
    transport = Timed(clock, ScriptedReply(status, [json.dumps(body).encode()],
                                           "application/json"), ok("gpt-4.1"))
    result = call(wire(CONTEXT, clock, transport))
    assert transport.hosts() == ["primary", "bigger"]  # never primary/m (the same model) again
    assert json.loads(transport.sent[1][2])["model"] == "gpt-4.1"
    assert served_by(result) == "bigger" and result.outcome is CallOutcome.OK
    assert "context too long → bigger/gpt-4.1 200" in str(result.trail)


def test_without_a_context_fallback_the_refusal_passes_through():
    status, body = TOO_LONG["openai"]
    clock = Clock()
    transport = Timed(clock, ScriptedReply(status, [json.dumps(body).encode()],
                                           "application/json"))
    result = call(wire(CONFIG, clock, transport))
    assert transport.hosts() == ["primary"] and status_of(result) == 400
    assert result.outcome is CallOutcome.PASSED_THROUGH


def test_a_content_policy_refusal_still_passes_through():
    clock = Clock()
    transport = Timed(clock, ScriptedReply(400, [json.dumps({"error": {
        "message": "Your request was rejected as a result of our safety system.",
        "type": "invalid_request_error", "code": "content_policy_violation"}}).encode()],
        "application/json"))
    result = call(wire(CONTEXT, clock, transport))
    assert transport.hosts() == ["primary"] and status_of(result) == 400


def test_when_every_larger_model_refuses_too_the_first_refusal_passes_through():
    status, body = TOO_LONG["openai"]
    refusal = json.dumps(body).encode()
    clock = Clock()
    transport = Timed(clock, ScriptedReply(status, [refusal], "application/json"),
                      ScriptedReply(400, [b'{"error": {"message": "prompt is too long"}}'],
                                    "application/json"))
    result = call(wire(CONTEXT, clock, transport))
    assert transport.hosts() == ["primary", "bigger"]
    assert result.outcome is CallOutcome.PASSED_THROUGH and result.delivery.body == refusal


# 6. A 2xx or 3xx that is not an answer is a failed attempt


@pytest.mark.parametrize("not_an_answer", [
    page(), ScriptedReply(200, [b""], "application/json"),
    ScriptedReply(200, [b"upstream connect error"], "text/plain"),
    page(302, location="https://login.test/"), page(301, location="https://elsewhere.test/v1")],
    ids=["html", "empty", "text", "302", "301"])
def test_a_page_is_retried_once_then_the_call_moves_on(not_an_answer):
    clock = Clock()
    transport = Timed(clock, not_an_answer, not_an_answer, ok())
    result = call(wire(CONFIG, clock, transport))
    assert transport.hosts() == ["primary", "primary", "backup"] and served_by(result) == "backup"
    assert "retried" in str(result.trail)


def test_a_page_passes_through_only_when_every_candidate_gave_one():
    clock = Clock()
    transport = Timed(clock, page(), page(), page(302, location="https://login.test/"))
    result = call(wire(CONFIG, clock, transport))
    assert result.outcome is CallOutcome.EXHAUSTED
    assert status_of(result) == 302 and b"Sign in" in result.delivery.body
    assert ("location", "https://login.test/") in result.delivery.headers


def test_a_stream_answer_is_still_committed():
    clock = Clock()
    transport = Timed(clock, ScriptedReply(pieces=[
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n', b"data: [DONE]\n\n"]))
    result = call(wire(CONFIG, clock, transport), stream=True)
    assert isinstance(result.delivery, Committed)
    asyncio.run(result.delivery.aclose())
