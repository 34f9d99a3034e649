"""The gateway listener end to end: a real mitmdump with `switchback_gateway`,
loopback fakes as `openai`, `anthropic` and two more providers, and the openai
SDK given only `base_url=http://127.0.0.1:PORT/v1` — no proxy, no CA. What the
proxy listener does for a call, the gateway does too: key failover, streams
through the relay byte for byte, cooldowns, fallbacks that never see the
client's key; what Switchback does not recognise reaches the right origin
untouched."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import anthropic
import httpx
import openai
import pytest

from support.fakemessages import COUNT, MESSAGES, RATE_LIMITED
from support.fakeprovider import CHAT, LIMITED, RESPONSES, FakeProvider, Reply, sse
from support.proxy import BIN, GUARD, free_port, running_proxy, stop, wait_for_port

K1, K2 = "sk-gateway-key-0001", "sk-gateway-key-0002"
A1, A2 = "sk-ant-api03-gateway-1", "sk-ant-api03-gateway-2"
CLIENT_KEY = "sk-client-own-key"
BACKUP_KEY = "sk-backup-literal"
CONFIG = """
providers:
  openai: {{base_url: "{openai}", keys: [{k1}, {k2}]}}
  anthropic: {{base_url: "{anthropic}", protocol: messages, keys: [{a1}, {a2}]}}
  primary: {{base_url: "{primary}"}}
  backup: {{base_url: "{backup}", keys: [{backup_key}]}}
fallbacks: {{"*": [backup/*]}}
"""
ERROR_500 = Reply(status=500, body={"error": {"message": "boom", "type": "server_error"}})


@pytest.fixture(scope="module")
def gateway_setup(tmp_path_factory, confdir, server_cert) -> Iterator[SimpleNamespace]:
    """One mitmdump with a gateway for the module, and the four fakes behind it."""
    names = ("openai", "anthropic", "primary", "backup")
    fakes = {name: FakeProvider(server_cert, name, **(
        {"paths": (MESSAGES, COUNT)} if name == "anthropic" else {})) for name in names}
    for fake in fakes.values():
        fake.__enter__()
    gateway = free_port()
    config = CONFIG.format(k1=K1, k2=K2, a1=A1, a2=A2, backup_key=BACKUP_KEY,
                           **{name: fake.base_url for name, fake in fakes.items()})
    try:
        with running_proxy(tmp_path_factory.mktemp("gateway"), confdir, server_cert.ca, config,
                           extra=("--set", f"switchback_gateway={gateway}"),
                           status=True) as running:
            wait_for_port(gateway, running.process, running.log)
            yield SimpleNamespace(proxy=running, url=f"http://127.0.0.1:{gateway}", **fakes)
    finally:
        for fake in fakes.values():
            fake.__exit__(None, None, None)


@pytest.fixture
def gw(gateway_setup) -> SimpleNamespace:
    """The module's gateway, fresh: fakes forgotten, Switchback's state reset."""
    for name in ("openai", "anthropic", "primary", "backup"):
        getattr(gateway_setup, name).reset()
    gateway_setup.proxy.fresh()
    return gateway_setup


def plain_http(**kwargs) -> httpx.Client:
    """A client with no proxy and no CA of its own: only plain HTTP to loopback."""
    return httpx.Client(trust_env=False, timeout=30, **kwargs)


def sdk(base_url: str, api_key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                         http_client=plain_http())


def ask(client: openai.OpenAI, protocol: str, stream: bool) -> str:
    """One call in `protocol`; the answer's text."""
    if protocol == "chat":
        if not stream:
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
            return answer.choices[0].message.content
        chunks = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if not stream:
        return client.responses.create(model="m", input="hi").output_text
    events = client.responses.create(model="m", input="hi", stream=True)
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


@pytest.mark.parametrize("protocol,stream", [("chat", False), ("chat", True),
                                             ("responses", False), ("responses", True)])
def test_a_429_on_key_1_is_served_by_key_2_with_no_ca(gw, protocol, stream):
    gw.openai.script(LIMITED)
    assert ask(sdk(gw.url + "/v1"), protocol, stream) == "hello from openai"
    path = CHAT if protocol == "chat" else RESPONSES
    assert [s.path for s in gw.openai.seen] == ["/v1" + path] * 2
    first, second = (s.key for s in gw.openai.seen)
    assert {first, second} == {K1, K2}  # the limited key, then the other one
    assert gw.backup.count() == 0
    line = gw.proxy.log_line(f"switchback: {protocol} m")
    assert "429" in line and "2 attempt(s)" in line
    assert CLIENT_KEY not in gw.proxy.output() and K1 not in gw.proxy.output()


def test_an_error_at_the_head_of_a_stream_fails_over_with_nothing_reaching_the_client(gw):
    """The first-chunk gate on the gateway: a keepalive comment, then an error
    event cut over two reads; the client sees only the fallback's answer."""
    error = sse({"error": {"message": "LEAKED-MARKER overloaded", "type": "server_error"}})
    gw.openai.script(Reply(raw=[b": PROCESSING\n\n", error[:9], error[9:]]))
    with plain_http() as client:
        answer = client.post(gw.url + "/v1" + CHAT, headers={"authorization": "Bearer x"},
                             json={"model": "m", "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and b"LEAKED-MARKER" not in answer.content
    assert b"hello" in answer.content and answer.content.endswith(b"data: [DONE]\n\n")
    # An error event says the provider is in trouble: on to the fallback.
    assert gw.openai.count() == 1 and gw.backup.count() == 1
    line = gw.proxy.log_line("switchback: chat m stream")
    assert "ok via backup" in line and "error event" in line


def test_the_cooling_key_is_skipped_on_the_next_calls(gw):
    gw.openai.script(LIMITED)  # retry-after: 20
    client = sdk(gw.url + "/v1")
    ask(client, "chat", False)
    limited = gw.openai.seen[0].key
    for _ in range(2):  # rotation alone would have gone back to the limited key once
        assert ask(client, "chat", True) == "hello from openai"
    assert [s.key for s in gw.openai.seen[2:]] == [({K1, K2} - {limited}).pop()] * 2


def test_a_stream_reaches_the_client_byte_for_byte(gw, server_cert):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    verify = ssl.create_default_context(cafile=str(server_cert.ca))
    with httpx.Client(verify=verify, trust_env=False, timeout=30) as direct:
        expected = direct.post(gw.openai.base_url + CHAT, json=body,
                               headers={"authorization": f"Bearer {K2}"}).content
    gw.openai.reset()
    gw.openai.script(LIMITED)
    with plain_http() as client:
        with client.stream("POST", gw.url + "/v1" + CHAT, json=body,
                           headers={"authorization": f"Bearer {CLIENT_KEY}"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            got = b"".join(answer.iter_raw())
    assert got == expected and b"hello" in got
    assert len(gw.openai.seen) == 2


def test_a_fallback_never_sees_the_client_key(gw):
    """`/primary/…` is provider `primary`, which has no keys: the client's own
    key goes there, and only there; its fallback uses its configured key."""
    gw.primary.script(ERROR_500, ERROR_500)  # a one-off 5xx is retried once, then the backup
    assert ask(sdk(gw.url + "/primary"), "chat", True) == "hello from backup"
    assert [s.key for s in gw.primary.seen] == [CLIENT_KEY] * 2
    assert [s.key for s in gw.backup.seen] == [BACKUP_KEY]
    assert all(CLIENT_KEY not in json.dumps(s.headers) for s in gw.backup.seen)
    assert "backup" in gw.proxy.log_line("switchback: chat m stream")


def test_calls_switchback_does_not_recognise_reach_the_right_origin_untouched(gw):
    with plain_http() as client:
        models = client.get(gw.url + "/v1/models?limit=5",
                            headers={"authorization": f"Bearer {CLIENT_KEY}"})
        claude_models = client.get(gw.url + "/v1/models",
                                   headers={"x-api-key": "sk-ant-own",
                                            "anthropic-version": "2023-06-01"})
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "openai-model"
    assert claude_models.json()["data"][0]["id"] == "anthropic-model"
    (to_openai,), (to_anthropic,) = gw.openai.seen, gw.anthropic.seen
    # The client's own key, not a configured one: the request was left alone.
    assert to_openai.path == "/v1/models" and to_openai.key == CLIENT_KEY
    assert to_openai.headers["host"] == f"localhost:{gw.openai.port}"
    assert to_anthropic.headers["x-api-key"] == "sk-ant-own"
    assert "authorization" not in to_anthropic.headers


def test_claude_codes_call_fails_over_to_the_other_key_with_no_ca(gw):
    """Claude Code's call, as it sends it to ANTHROPIC_BASE_URL, through the
    anthropic SDK given only the gateway's URL: routed to the provider named
    anthropic, where a 429 on key 1 is served by key 2; the call's own
    headers travel with it."""
    gw.anthropic.script(Reply(status=429, headers={"retry-after": "20"},
                              body=RATE_LIMITED))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-own", max_retries=0,
                                 default_headers={"anthropic-beta":
                                                  "interleaved-thinking-2025-05-14"})
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "hello from anthropic"
    first, second = gw.anthropic.seen
    assert (first.headers["x-api-key"], second.headers["x-api-key"]) == (A1, A2)
    assert second.path == "/v1/messages"
    assert second.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert gw.openai.count() == gw.primary.count() == gw.backup.count() == 0
    assert "anthropic#" in gw.proxy.log_line("messages claude-sonnet-4-5 stream")


def test_a_path_that_names_no_provider_is_answered_by_the_gateway(gw):
    with plain_http() as client:
        answer = client.post(gw.url + "/nowhere/chat/completions", json={"model": "m"},
                             headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_gateway_path"
    assert sum(getattr(gw, n).count() for n in ("openai", "anthropic", "primary", "backup")) == 0


def test_the_proxy_listener_still_works_beside_it(gw):
    gw.openai.script(LIMITED)
    assert ask(gw.proxy.openai(gw.openai.base_url), "chat", True) == "hello from openai"
    assert {s.key for s in gw.openai.seen} == {K1, K2}


def test_switchback_run_gateway_serves_a_client_with_no_ca(tmp_path, server_cert):
    """The command people type: `switchback run --gateway`, and a client whose
    environment comes from `switchback env --gateway`."""
    with FakeProvider(server_cert, "openai") as fake:
        fake.script(LIMITED)
        config = tmp_path / "switchback.yaml"
        config.write_text(f'providers: {{openai: {{base_url: "{fake.base_url}", '
                          f'keys: [{K1}, {K2}]}}}}\n')
        port, gateway, log = free_port(), free_port(), tmp_path / "run.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(BIN / "switchback"), "run", "--certs", str(tmp_path / "certs"),
                 "--listen", f"127.0.0.1:{port}", "--gateway", f"127.0.0.1:{gateway}",
                 "--config", str(config), "--", "-s", str(GUARD),
                 "--set", f"ssl_verify_upstream_trusted_ca={server_cert.ca}",
                 "--set", "switchback_status_port=0"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for_port(gateway, process, log)
            env = subprocess.run([str(BIN / "switchback"), "env", "--gateway", str(gateway)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            base_url = env_value(env, "OPENAI_BASE_URL")
            done = subprocess.run(
                [sys.executable, "-c", STREAM_CALL.format(base_url=base_url)],
                capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        finally:
            stop(process)
        assert done.returncode == 0, done.stderr + log.read_text()
        assert done.stdout.strip() == "hello from openai"
        assert [s.key for s in fake.seen] in ([K1, K2], [K2, K1])
    text = log.read_text()
    assert f"gateway on http://127.0.0.1:{gateway}" in text and "2 attempt(s)" in text


STREAM_CALL = """
import openai
client = openai.OpenAI(base_url={base_url!r}, api_key="sk-client", max_retries=0, timeout=20)
chunks = client.chat.completions.create(model="m", stream=True,
                                        messages=[{{"role": "user", "content": "hi"}}])
print("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
"""


def env_value(exports: str, name: str) -> str:
    (line,) = [line for line in exports.splitlines() if line.startswith(f"export {name}=")]
    return line.partition("=")[2]
