"""Budgets end to end: real mitmdumps with the Switchback addon, the fake
provider upstream, the openai SDK and raw httpx as clients.

Pricing makes one token cost one dollar (model "m" at $1,000,000 per million
tokens in and out), so a served call — the fake reports 5 input and 3 output
tokens — costs $8 and 8 tokens, and every sum below is whole.

Who pays: the proxy user (mitmproxy's `proxyauth`, here an htpasswd file),
else the client key's fingerprint, else "anonymous". A call that would
overrun its principal's budget (spent + reserved + its worst-case estimate >
limit) is refused with a 429 `insufficient_quota`/`budget_exceeded` answer
and `x-should-retry: false`, before any upstream attempt.

The worst case of a Responses call `{"model": "m", "input": "hi",
"max_output_tokens": n}` is small and known: a few tokens of input plus n of
output. The tests read it off the product's estimator for the exact body the
provider received, and check that it lies where the test's arithmetic needs
it, so each refusal is predicted, not just observed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from support.fakeprovider import CHAT, RESPONSES, FakeProvider, Reply
from support.proxy import Proxy, running_proxy
from support.redisserver import RedisServer
from switchback.accounting.estimate import worst_case

PRICING = """
pricing:
  m: {{input: 1000000, output: 1000000}}
"""
CALL_TOKENS = 8  # what the fake reports for every call: 5 in + 3 out
CALL_USD = 8.0  # at one dollar a token


# ---------------------------------------------------------------- helpers

def fingerprint(key: str) -> str:
    """The principal a client key stands for: computed here, not imported."""
    return "#" + hashlib.sha256(key.encode()).hexdigest()[:6]


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def status(running: Proxy) -> dict:
    return json.loads(get(running.status_port, "/status"))


def rows(running: Proxy) -> dict[str, dict]:
    """/status budgets by principal (each test here has one budget per principal)."""
    found: dict[str, dict] = {}
    for row in status(running)["budgets"]:
        assert row["principal"] not in found, f"two rows for {row['principal']}: {found}"
        found[row["principal"]] = row
    return found


def settled(running: Proxy, principal: str, calls: int, seconds: float = 10) -> dict:
    """`principal`'s row once `calls` calls are booked and nothing is held any
    more (a stream's hold settles when the stream closes, just after the
    client read its end)."""
    deadline = time.monotonic() + seconds
    while True:
        row = rows(running).get(principal)
        if row is not None and row["calls"] == calls and row["reserved_tokens"] == 0 \
                and row["reserved_usd"] == 0:
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"{principal} did not settle to {calls} calls: {row}")
        time.sleep(0.05)


def client_ssl(running: Proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(running.ca))


def http_client(running: Proxy, user: str | None = None, password: str | None = None,
                sent: list | None = None) -> httpx.Client:
    """An httpx client through the proxy, with proxy credentials when given;
    `sent` collects every request it makes (retries included)."""
    where = f"127.0.0.1:{running.port}"
    url = f"http://{user}:{password}@{where}" if user else f"http://{where}"
    hooks = {"request": [sent.append]} if sent is not None else {}
    return httpx.Client(proxy=url, verify=client_ssl(running), trust_env=False, timeout=30,
                        event_hooks=hooks)


def sdk(running: Proxy, base_url: str, key: str, user: str | None = None,
        password: str | None = None, sent: list | None = None) -> openai.OpenAI:
    """The openai SDK through the proxy, with its default retries: a refusal
    it retried would show as more than one request in `sent`."""
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=2,
                         http_client=http_client(running, user, password, sent))


def small_call(output: int) -> dict:
    """A Responses call whose worst case is a few input tokens plus `output`."""
    return {"model": "m", "input": "hi", "max_output_tokens": output}


def estimate_of(body: dict) -> int:
    """The worst case (tokens) Switchback holds for `body`; at one dollar a
    token, the same figure in USD."""
    return worst_case(body, 4096).total


def ask(client: openai.OpenAI, output: int) -> str:
    return client.responses.create(**small_call(output)).output_text


def post(client: httpx.Client, base_url: str, body: dict, key: str | None,
         path: str = RESPONSES) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return client.post(base_url + path, json=body, headers=headers)


def assert_refusal(answer: httpx.Response) -> str:
    """A budget refusal as the brief specifies it; its message."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["x-should-retry"] == "false"
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "budget_exceeded"
    assert error["param"] is None
    return error["message"]


def htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An Apache htpasswd file ({SHA} entries, which passlib — and so
    mitmproxy's proxyauth — reads)."""
    path.write_text("".join(
        f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}\n"
        for user, password in users.items()))
    return path


# ---------------------------------------------------------- 1. proxyauth

TEAMS = PRICING + """
providers:
  primary: {{base_url: "{base_url}"}}
budgets:
  team-a: {{usd: 20, period: day}}
  "*": {{tokens: 1000, period: month}}
budget_output_tokens: 4096
"""


def test_proxy_users_pay_for_their_own_calls_and_a_refusal_reaches_no_provider(
        fakes, proxy, tmp_path):
    fake = fakes("primary")
    users = htpasswd(tmp_path / "htpasswd", {"team-a": "secret", "team-b": "other"})
    running = proxy(TEAMS.format(base_url=fake.base_url), status=True,
                    extra=("--set", f"proxyauth=@{users}"))

    # A configured principal shows before its first call; "*" is no principal.
    before = rows(running)
    assert set(before) == {"team-a"}
    assert before["team-a"] == {**before["team-a"], "period": "day", "limit_usd": 20,
                                "spent_usd": 0, "spent_tokens": 0, "reserved_usd": 0,
                                "reserved_tokens": 0, "calls": 0, "refused": 0,
                                "unpriced_calls": 0}
    assert "limit_tokens" not in before["team-a"]
    assert before["team-a"]["window_start"].endswith("T00:00:00Z")  # a UTC day

    # Wrong proxy credentials are mitmproxy's business: 407, nothing booked.
    with http_client(running, "team-a", "wrong") as intruder:
        with pytest.raises(httpx.ProxyError):
            post(intruder, fake.base_url, small_call(1), "sk-team-a")
    assert fake.count() == 0

    sent_a: list[httpx.Request] = []
    team_a = sdk(running, fake.base_url, "sk-team-a", "team-a", "secret", sent_a)
    assert ask(team_a, 1) == "hello from primary"
    estimate = estimate_of(fake.seen[0].body)
    # Worst case of this call: 0 + E fits in $20, 8 + E fits, 16 + E does not.
    assert CALL_USD + estimate <= 20 < 2 * CALL_USD + estimate, \
        f"the test's arithmetic needs 4 < E <= 12; E = {estimate}"
    assert ask(team_a, 1) == "hello from primary"
    assert fake.count() == 2 and len(sent_a) == 2

    # Third call: 16 + E > 20. The SDK gets RateLimitError after exactly one
    # request (x-should-retry: false beats its two retries), the fake nothing.
    with pytest.raises(openai.RateLimitError) as refused:
        ask(team_a, 1)
    assert refused.value.status_code == 429
    assert refused.value.code == "budget_exceeded"
    assert refused.value.type == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(sent_a) == 3, "the SDK retried a budget refusal"
    assert fake.count() == 2, "a refused call reached the provider"

    # The same refusal as raw HTTP: status, header, body, message.
    with http_client(running, "team-a", "secret") as raw:
        message = assert_refusal(post(raw, fake.base_url, small_call(1), "sk-team-a"))
    assert fake.count() == 2
    assert "team-a" in message
    assert "day" in message
    assert "$20" in message
    assert "$16" in message  # what is spent
    assert f"${estimate}" in message  # what this call might cost

    # team-b, under "*" (tokens), is not refused meanwhile; nor is its stream.
    sent_b: list[httpx.Request] = []
    team_b = sdk(running, fake.base_url, "sk-team-b", "team-b", "other", sent_b)
    answer = team_b.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert answer.choices[0].message.content == "hello from primary"
    assert answer.usage.total_tokens == CALL_TOKENS

    with http_client(running, "team-b", "other") as raw_b:
        with raw_b.stream("POST", fake.base_url + CHAT, headers={
                "authorization": "Bearer sk-team-b"}, json={
                "model": "m", "stream": True, "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}]}) as streamed:
            assert streamed.status_code == 200
            text = streamed.read().decode()
    datas = [line.removeprefix("data: ") for line in text.splitlines()
             if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks, text
    assert all(chunk["choices"] for chunk in chunks), "the client got a chunk without choices"
    assert not any("usage" in chunk for chunk in chunks), "the client got usage it never asked for"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) \
        == "hello from primary"
    # Switchback asked the provider for the usage on the client's behalf.
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}
    assert fake.count() == 4

    a = settled(running, "team-a", 2)
    b = settled(running, "team-b", 2)
    assert a["spent_usd"] == 2 * CALL_USD and a["spent_tokens"] == 2 * CALL_TOKENS
    assert a["refused"] == 2 and a["unpriced_calls"] == 0
    assert b["period"] == "month" and b["limit_tokens"] == 1000 and "limit_usd" not in b
    assert b["spent_tokens"] == 2 * CALL_TOKENS and b["spent_usd"] == 2 * CALL_USD
    assert b["refused"] == 0
    assert b["window_start"].endswith("-01T00:00:00Z")  # a UTC month
    # The client keys paid nothing: the proxy user did.
    assert set(rows(running)) == {"team-a", "team-b"}


# ------------------------------------------- 2. key fingerprint, anonymous

KEYED = PRICING + """
providers:
  primary: {{base_url: "{base_url}"}}
budgets:
  "{print}": {{tokens: 10, period: hour}}
  anonymous: {{tokens: 10, period: hour}}
"""


def test_without_proxy_users_the_key_fingerprint_or_anonymous_pays(fakes, proxy):
    fake = fakes("primary")
    key = "sk-budgeted-client-key"
    running = proxy(KEYED.format(base_url=fake.base_url, print=fingerprint(key)), status=True)
    before = rows(running)
    assert set(before) == {fingerprint(key), "anonymous"}
    assert before[fingerprint(key)]["limit_tokens"] == 10
    assert before[fingerprint(key)]["window_start"].endswith(":00:00Z")  # a UTC hour

    with http_client(running) as client:
        assert post(client, fake.base_url, small_call(1), key).status_code == 200
        estimate = estimate_of(fake.seen[-1].body)
        assert estimate <= 10 < CALL_TOKENS + estimate, f"E = {estimate}"
        message = assert_refusal(post(client, fake.base_url, small_call(1), key))
        assert fingerprint(key) in message and "hour" in message
        assert key not in message  # the key itself is never shown
        assert "8 tokens spent" in message
        assert fake.count() == 1

        # No key at all: "anonymous" pays.
        assert post(client, fake.base_url, small_call(1), None).status_code == 200
        assert fake.seen[-1].key is None
        message = assert_refusal(post(client, fake.base_url, small_call(1), None))
        assert "anonymous" in message
        assert fake.count() == 2

        # Another key has no budget (no "*" entry): never refused.
        for _ in range(3):
            assert post(client, fake.base_url, small_call(1), "sk-free").status_code == 200
        assert fake.count() == 5

    found = rows(running)
    for principal in (fingerprint(key), "anonymous"):
        row = settled(running, principal, 1)
        assert (row["spent_tokens"], row["spent_usd"], row["refused"]) == (8, 8.0, 1)
    assert fingerprint("sk-free") not in found


# ------------------------------------------------------- 3. concurrency

CROWD = PRICING + """
providers:
  slow: {{base_url: "{base_url}"}}
budgets:
  "*": {{tokens: {limit}, period: hour}}
"""


def test_concurrent_calls_never_overspend_a_nearly_exhausted_budget(fakes, proxy):
    # Every answer waits, so the calls overlap: most are admitted while
    # others still hold their worst case.
    fake = fakes("slow", default=Reply(first_byte_delay=0.5))
    limit, callers, key = 200, 40, "sk-crowd"
    running = proxy(CROWD.format(base_url=fake.base_url, limit=limit), status=True)
    # The worst case covers what the fake will really report (3 output
    # tokens), so no admitted call can cost more than it held.
    body = small_call(3)
    estimate = estimate_of(body)
    assert estimate >= CALL_TOKENS, f"E = {estimate}"

    with http_client(running) as client:
        start = threading.Barrier(callers)

        def one(_: int) -> int:
            start.wait(timeout=30)
            return post(client, fake.base_url, body, key).status_code

        with ThreadPoolExecutor(callers) as pool:
            codes = list(pool.map(one, range(callers)))

    successes = codes.count(200)
    assert codes.count(429) == callers - successes, codes
    assert fake.count() == successes, "a refused call reached the provider"
    row = settled(running, fingerprint(key), successes)
    assert row["spent_tokens"] == successes * CALL_TOKENS
    assert row["spent_tokens"] <= limit, f"overspent: {row}"
    assert row["refused"] == callers - successes
    # And not over-careful: a call is refused only once spent + held > L - E,
    # and everything held becomes at most E of spend.
    assert successes * estimate > limit - estimate, f"{successes} admitted, E = {estimate}"


# ------------------------------------------------- 4. replicas via Redis

SHARED = PRICING + """
state: {{url: "{redis}", prefix: budgets-test}}
providers:
  primary: {{base_url: "{base_url}"}}
budgets:
  "{print}": {{tokens: 20, period: day}}
"""


def test_replicas_share_one_budget_through_redis(tmp_path, confdir, server_cert):
    key = "sk-shared-budget"
    with ExitStack() as stack:
        fake = stack.enter_context(FakeProvider(server_cert, "primary"))
        redis = stack.enter_context(RedisServer(tmp_path))
        config = SHARED.format(redis=redis.url, base_url=fake.base_url, print=fingerprint(key))
        replicas = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas.append(stack.enter_context(running_proxy(
                tmp_path / name, confdir, server_cert.ca, config, status=True)))
        a, b = replicas
        deadline = time.monotonic() + 15
        while not (status(a)["state"]["healthy"] and status(b)["state"]["healthy"]):
            assert time.monotonic() < deadline, "the replicas did not join Redis"
            time.sleep(0.1)
        assert status(a)["state"]["backend"] == "redis"

        body = small_call(3)
        estimate = estimate_of(body)
        # 0 + E and 8 + E fit in 20 tokens; 16 + E does not.
        assert CALL_TOKENS + estimate <= 20 < 2 * CALL_TOKENS + estimate, f"E = {estimate}"
        clients = {name: stack.enter_context(http_client(r)) for name, r in
                   (("a", a), ("b", b))}
        assert post(clients["a"], fake.base_url, body, key).status_code == 200
        assert post(clients["b"], fake.base_url, body, key).status_code == 200
        for name in ("a", "b"):  # the third call, on either replica
            message = assert_refusal(post(clients[name], fake.base_url, body, key))
            assert "16 tokens spent" in message, message
        assert fake.count() == 2

        for replica in (b, a):
            row = settled(replica, fingerprint(key), 2)
            assert row["spent_tokens"] == 2 * CALL_TOKENS
            assert row["spent_usd"] == 2 * CALL_USD
            assert row["limit_tokens"] == 20
            assert row["refused"] == 2


# ---------------------------------------------------------- 5. metrics

PRICED = PRICING + """
providers:
  primary: {{base_url: "{base_url}"}}
"""


def test_tokens_and_cost_reach_metrics_and_the_log(fakes, proxy):
    fake = fakes("primary")
    running = proxy(PRICED.format(base_url=fake.base_url), status=True)
    answer = running.openai(fake.base_url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.usage.prompt_tokens == 5

    line = running.log_line("5 in, 3 out tokens")
    assert "5 in, 3 out tokens, $8" in line and "primary 200" in line, line
    metrics = get(running.status_port, "/metrics")
    for sample in ('switchback_tokens_total{kind="input",model="m",provider="primary"} 5.0',
                   'switchback_tokens_total{kind="output",model="m",provider="primary"} 3.0',
                   'switchback_cost_usd_total{model="m",provider="primary"} 8.0'):
        assert sample in metrics.splitlines(), f"{sample} not in:\n{metrics}"
    # Kinds that were zero are not counted at all.
    assert 'kind="cached"' not in metrics and 'kind="reasoning"' not in metrics
    # No budgets configured: nobody is listed.
    assert status(running)["budgets"] == []
