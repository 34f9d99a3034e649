"""Rate-limit signals end to end: each hint family, sent by a fake provider
with a 429, cools exactly the key that got it, for as long as it says; the
openai SDK is the client. The fake counts requests per key.

The hint families share one mitmdump (a provider each, so their state stays
apart) and read the cooldown's length off /status instead of sleeping it
out; one test waits for a short cooldown to end."""

from __future__ import annotations

import email.utils
import json
import time
import urllib.request
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import openai
import pytest

from support.fakeprovider import FakeProvider, Reply
from support.proxy import free_port, running_proxy
from switchback.recognise import fingerprint

COOL = 2.0  # seconds every hint below asks for


def rfc3339(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def epoch_ms(seconds: float) -> str:
    return str(int((time.time() + seconds) * 1000))


def limited(headers=None, error=None) -> Reply:
    body = error if error is not None else {"error": {"message": "Rate limit reached",
                                                      "code": "rate_limit_exceeded"}}
    return Reply(status=429, headers=headers or {}, body=body)


HINT_FAMILIES = {
    "retry-after seconds": lambda: limited({"retry-after": "2"}),
    "retry-after http-date": lambda: limited(
        {"retry-after": email.utils.formatdate(time.time() + COOL, usegmt=True)}),
    "retry-after-ms": lambda: limited({"retry-after-ms": "2000"}),
    "x-ms-retry-after-ms": lambda: limited({"x-ms-retry-after-ms": "2000"}),
    "x-ratelimit go duration": lambda: limited({"x-ratelimit-remaining-requests": "0",
                                                "x-ratelimit-reset-requests": "2s"}),
    "anthropic rfc3339": lambda: limited({"anthropic-ratelimit-requests-remaining": "0",
                                          "anthropic-ratelimit-requests-reset": rfc3339(COOL)}),
    "openrouter epoch ms in body": lambda: limited(error={"error": {
        "message": "Rate limit exceeded", "code": 429,
        "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
                                 "X-RateLimit-Reset": epoch_ms(COOL)}}}}),
    "gemini retryDelay array": lambda: limited(error=[{"error": {
        "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                     "retryDelay": "2s"}]}}]),
    "try again in prose": lambda: limited(error={"error": {
        "message": "Rate limit reached for gpt-4o. Please try again in 2s.",
        "code": "rate_limit_exceeded"}}),
}


@pytest.fixture(scope="module")
def families(tmp_path_factory, server_cert, confdir):
    """One fake and one mitmdump for every hint family: provider f<n> with keys
    k1-f<n> and k2-f<n>, all on the same fake under their own path."""
    with ExitStack() as stack:
        fake = stack.enter_context(FakeProvider(server_cert, "keyed"))
        root = fake.base_url.removesuffix("/v1")
        providers = "".join(f'  f{n}: {{base_url: "{root}/f{n}/v1", keys: [k1-f{n}, k2-f{n}]}}\n'
                            for n in range(len(HINT_FAMILIES)))
        status_port = free_port()
        running = stack.enter_context(running_proxy(
            tmp_path_factory.mktemp("families"), confdir, server_cert.ca,
            f"providers:\n{providers}cooldown: {{max_wait: 0s}}\n",
            extra=("--set", f"switchback_status_port={status_port}")))
        yield fake, running, root, status_port


def cooldowns(status_port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=10) as answer:
        return json.load(answer)["cooldowns"]


@pytest.mark.parametrize("n,family", list(enumerate(HINT_FAMILIES)), ids=list(HINT_FAMILIES))
def test_hint_cools_exactly_the_key_for_as_long_as_it_says(families, n, family):
    fake, running, root, status_port = families
    client = running.openai(f"{root}/f{n}/v1")
    fake.script(HINT_FAMILIES[family]())
    ask(client)  # k1 429 → k2 200
    assert (fake.count(key=f"k1-f{n}"), fake.count(key=f"k2-f{n}")) == (1, 1)
    ask(client)  # k1 cooling: k2 again, k1 gets nothing
    assert (fake.count(key=f"k1-f{n}"), fake.count(key=f"k2-f{n}")) == (1, 2)
    (cooling,) = [c for c in cooldowns(status_port) if c["provider"] == f"f{n}"]
    # a rate limit cools the key for that model (#17)
    assert cooling["scope"] == "key_model" and cooling["reason"] == "rate limit"
    assert cooling["key"] == fingerprint(f"k1-f{n}")
    assert COOL - 1.5 < cooling["remaining_s"] <= COOL  # whole seconds in an HTTP-date


@pytest.fixture
def two_keys(shared):
    fake = shared.fake("keyed")
    running = shared.proxy(f"""
providers:
  keyed: {{base_url: "{fake.base_url}", keys: [k1, k2]}}
cooldown: {{max_wait: 0s}}
""")
    return fake, running.openai(fake.base_url)


def ask(client) -> str:
    return client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


def test_a_cooled_key_is_used_again_once_its_time_has_passed(two_keys):
    # Long enough that a busy machine still asks again inside it; then the
    # test waits the hint out rather than racing it.
    fake, client = two_keys
    fake.script(limited({"retry-after-ms": "2500"}))
    ask(client)  # k1 429 → k2 200
    limited_at = time.monotonic()
    ask(client)  # k1 cooling: k2 again
    assert (fake.count(key="k1"), fake.count(key="k2")) == (1, 2)
    time.sleep(max(0.0, limited_at + 2.6 - time.monotonic()))
    ask(client)  # k1's time has passed and it is the least recently used
    assert (fake.count(key="k1"), fake.count(key="k2")) == (2, 2)


def test_keys_rotate_inside_one_provider(two_keys):
    fake, client = two_keys
    for _ in range(4):
        ask(client)
    assert [s.key for s in fake.seen] == ["k1", "k2", "k1", "k2"]


def test_success_with_remaining_zero_skips_the_key_before_any_429(two_keys):
    fake, client = two_keys
    fake.script(Reply(headers={"x-ratelimit-remaining-requests": "0",
                               "x-ratelimit-reset-requests": "30s"}))
    for _ in range(3):
        ask(client)
    assert [s.key for s in fake.seen] == ["k1", "k2", "k2"]


def test_billing_429_is_not_retried_by_the_sdk(fakes, proxy):
    fake = fakes("billing")
    running = proxy(f'providers: {{billing: {{base_url: "{fake.base_url}", keys: [k1]}}}}\n')
    fake.script(limited(error={"error": {"message": "You exceeded your current quota",
                                         "type": "insufficient_quota",
                                         "code": "insufficient_quota"}}))
    client = running.openai(fake.base_url)
    client = client.with_options(max_retries=2)  # the SDK's default would retry a 429 twice
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert fake.count() == 1  # the SDK believed us and did not retry


def test_exhaustion_answer_carries_the_shortest_cooldown(two_keys):
    fake, client = two_keys
    fake.script(limited({"retry-after": "30"}), limited({"retry-after": "12"}))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    headers = caught.value.response.headers
    assert 11 <= int(headers["retry-after"]) <= 12
    assert 11000 <= int(headers["retry-after-ms"]) <= 12000
    assert json.loads(caught.value.response.text)["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as again:
        ask(client)  # both keys cooling: answered without a request
    assert again.value.body["code"] == "switchback_all_cooling"
    assert fake.count() == 2


def test_one_providers_limit_never_cools_a_sibling(fakes, proxy):
    a, b = fakes("a"), fakes("b")
    running = proxy(f"""
providers:
  a: {{base_url: "{a.base_url}", keys: [shared]}}
  b: {{base_url: "{b.base_url}", keys: [shared]}}
""")
    a.script(limited({"retry-after": "30"}))
    with pytest.raises(openai.RateLimitError):
        ask(running.openai(a.base_url))
    assert ask(running.openai(b.base_url)) == "hello from b"


def test_short_wait_for_a_key_that_returns_soon(fakes, proxy):
    fake = fakes("solo")
    running = proxy(f"""
providers:
  solo: {{base_url: "{fake.base_url}", keys: [k1]}}
cooldown: {{max_wait: 3s}}
""")
    fake.script(limited({"retry-after-ms": "800"}))
    assert ask(running.openai(fake.base_url)) == "hello from solo"
    assert fake.count(key="k1") == 2
