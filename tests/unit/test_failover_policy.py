"""Issue #17's pure decisions, by table: which failures are retried on the
same candidate and after how long, which cooldowns may be probed, what a
context-length refusal looks like, which 2xx/3xx are no answer, and the
config that names context fallbacks and the probe interval."""

from __future__ import annotations

import json

import pytest

from switchback.config import ConfigError, parse_config
from switchback.health.cooldown import Cooling, CooldownPolicy
from switchback.health.hints import Hints
from switchback.health.retry import PAUSE, Again, again
from switchback.health.verdict import (Action, Cooldown, Outcome, Scope, Verdict, answer_shaped,
                                       judge)
from switchback.vocabulary import FailureKind, Reason, Retry

NOW = 1_700_000_000.0


def body(value) -> bytes:
    return json.dumps(value).encode()


RATE = body({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})


@pytest.mark.parametrize("name,outcome,action,reason,scope", [
    ("429 rate limit: key for that model", Outcome(429, body=RATE), Action.NEXT_KEY,
     Reason.RATE_LIMIT, Scope.KEY_MODEL),
    ("429 quota: the key", Outcome(429, body=body({"error": {"code": "insufficient_quota"}})),
     Action.NEXT_KEY, Reason.QUOTA, Scope.KEY),
    ("429 per day: the key", Outcome(429, body=body([{"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}]}}])),
     Action.NEXT_KEY, Reason.QUOTA, Scope.KEY),
    ("302 redirect", Outcome(302, {"location": "https://login"}, b"<html>"),
     Action.NEXT_PROVIDER, Reason.NOT_AN_ANSWER, Scope.MODEL),
    ("200 html, whole", Outcome(200, body=b"<html></html>", failure=FailureKind.NOT_AN_ANSWER),
     Action.NEXT_PROVIDER, Reason.NOT_AN_ANSWER, Scope.MODEL),
    ("anthropic too long", Outcome(400, body=body({"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens"}})),
     Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
    ("llama.cpp too long", Outcome(400, body=body({"error": {
        "type": "exceed_context_size_error",
        "message": "the request exceeds the available context size"}})),
     Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
    ("gemini too long", Outcome(400, body=body([{"error": {
        "message": "The input token count (1200000) exceeds the maximum number of tokens "
                   "allowed (1048576)."}}])), Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
    ("413", Outcome(413, body=b"too big"), Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
    ("context length at a stream's head", Outcome(200, body=body({"error": {
        "code": "context_length_exceeded"}}), failure=FailureKind.ERROR_EVENT),
     Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
    ("content policy", Outcome(400, body=body({"error": {
        "code": "content_policy_violation", "message": "rejected by our safety system"}})),
     Action.PASS_THROUGH, Reason.CLIENT_ERROR, None),
])
def test_judge(name, outcome, action, reason, scope):
    verdict = judge(outcome, NOW)
    assert (verdict.action, verdict.reason) == (action, reason)
    assert (verdict.cooldown.scope if verdict.cooldown else None) is scope


def test_a_503_without_a_hint_is_a_one_off_until_it_repeats():
    assert judge(Outcome(503), NOW).cooldown.after == 2
    assert judge(Outcome(503, {"retry-after": "5"}), NOW).cooldown.after == 1
    assert judge(Outcome(529), NOW).cooldown.after == 1


@pytest.mark.parametrize("raw,shaped", [
    (b'{"choices": []}', True), (b' \n{"a": 1}\n', True), (b"[]", True),
    (b"", False), (b"   ", False), (b"<html>oops</html>", False), (b"Bad Gateway", False),
    (b'{"truncated": ', False), (b" " * 100 + b"{}" + b" " * 100, True),
])
def test_answer_shaped(raw, shaped):
    assert answer_shaped(raw) is shaped


def verdict_of(status: int, wait: float | None = None, reason=Reason.SERVER_ERROR,
               action=Action.NEXT_PROVIDER, scope=Scope.MODEL, long=False) -> Verdict:
    return Verdict(action, reason, Cooldown(scope, long=long), Hints(retry_after=wait))


BASE = dict(retried=False, probe=False, failed_before=False, cooling_left=None, addressed=True,
            next_moves=True, max_wait=2.0, rand=0.0)
RATE_2S = verdict_of(429, 2.0, Reason.RATE_LIMIT, Action.NEXT_KEY, Scope.KEY_MODEL)


@pytest.mark.parametrize("name,verdict,outcome,changes,expected", [
    ("500 once", verdict_of(500), Outcome(500), {}, Again(PAUSE, Retry.TRANSIENT)),
    ("502", verdict_of(502), Outcome(502), {}, Again(PAUSE, Retry.TRANSIENT)),
    ("503", verdict_of(503, reason=Reason.OVERLOADED), Outcome(503), {},
     Again(PAUSE, Retry.TRANSIENT)),
    ("504", verdict_of(504), Outcome(504), {}, Again(PAUSE, Retry.TRANSIENT)),
    ("jittered", verdict_of(500), Outcome(500), {"rand": 0.5},
     Again(PAUSE * 1.5, Retry.TRANSIENT)),
    ("reset", verdict_of(0, reason=Reason.RESET), Outcome(None, failure=FailureKind.RESET), {},
     Again(PAUSE, Retry.TRANSIENT)),
    ("page", verdict_of(200, reason=Reason.NOT_AN_ANSWER),
     Outcome(200, failure=FailureKind.NOT_AN_ANSWER), {}, Again(PAUSE, Retry.TRANSIENT)),
    ("timeout is not transient", verdict_of(0, reason=Reason.TIMEOUT),
     Outcome(None, failure=FailureKind.TIMEOUT), {}, None),
    ("refused is not", verdict_of(0, reason=Reason.REFUSED),
     Outcome(None, failure=FailureKind.REFUSED), {}, None),
    ("501 is not", verdict_of(501), Outcome(501), {}, None),
    ("failed recently", verdict_of(500), Outcome(500), {"failed_before": True}, None),
    ("scope cooling", verdict_of(500), Outcome(500), {"cooling_left": 1.0}, None),
    ("already retried", verdict_of(500), Outcome(500), {"retried": True}, None),
    ("a probe moves on", verdict_of(500), Outcome(500), {"probe": True}, None),
    ("hint within max_wait", RATE_2S, Outcome(429), {"cooling_left": 2.0},
     Again(2.0, Retry.HINTED)),
    ("hint past max_wait", RATE_2S, Outcome(429), {"cooling_left": 2.5}, None),
    ("max_wait off", RATE_2S, Outcome(429), {"cooling_left": 1.0, "max_wait": 0.0}, None),
    ("next is the same model elsewhere on the provider", RATE_2S, Outcome(429),
     {"cooling_left": 2.0, "next_moves": False}, None),
    ("not the addressed candidate", RATE_2S, Outcome(429),
     {"cooling_left": 2.0, "addressed": False}, None),
    ("quota is never waited for", verdict_of(429, 2.0, Reason.QUOTA, Action.NEXT_KEY, Scope.KEY,
                                             long=True), Outcome(429), {"cooling_left": 2.0},
     None),
    ("a hinted 503 is waited, not retried as transient",
     verdict_of(503, 1.0, Reason.OVERLOADED), Outcome(503), {"cooling_left": 1.0},
     Again(1.0, Retry.HINTED)),
])
def test_again(name, verdict, outcome, changes, expected):
    assert again(verdict, outcome, **{**BASE, **changes}) == expected


@pytest.mark.parametrize("seconds,hinted,long,expected", [
    (40, False, False, NOW + 10), (10, False, False, None), (5, False, False, None),
    (40, True, False, None), (3600, False, True, None)])
def test_only_our_own_backoff_is_probed(seconds, hinted, long, expected):
    assert CooldownPolicy(probe=10).probe_at(NOW, seconds, hinted, long) == expected


def test_probing_can_be_turned_off():
    assert CooldownPolicy(probe=0).probe_at(NOW, 300, False, False) is None


def test_a_probe_is_due_between_its_time_and_the_cooldowns_end():
    cooling = Cooling(NOW + 30, Reason.SERVER_ERROR, probe_at=NOW + 10)
    assert [cooling.probe_due(NOW + t) for t in (0, 10, 29, 30)] == [False, True, True, False]
    assert not Cooling(NOW + 30, Reason.RATE_LIMIT).probe_due(NOW + 20)


def test_config_reads_context_fallbacks_and_the_probe_interval():
    config = parse_config("""
providers: {bigger: {base_url: "https://bigger.test/v1", keys: [k]}}
context_fallbacks: {gpt-4o: [bigger/gpt-4.1], "*": [bigger/*]}
cooldown: {probe: 15s}
""", "t.yaml", {})
    assert [(t.provider, t.model_for("gpt-4o")) for t in
            config.context_fallbacks_for("gpt-4o")] == [("bigger", "gpt-4.1")]
    assert config.context_fallbacks_for("other")[0].model_for("other") == "other"
    assert config.cooldown.probe == 15
    assert parse_config("cooldown: {probe: 0s}", "t.yaml", {}).cooldown.probe == 0
    assert parse_config("", "t.yaml", {}).cooldown.probe == 10


def test_a_context_fallback_to_an_unknown_provider_is_named():
    with pytest.raises(ConfigError) as caught:
        parse_config("context_fallbacks: {m: [nowhere/big]}", "t.yaml", {})
    assert caught.value.key == "context_fallbacks.m[0]" and "nowhere" in caught.value.problem
