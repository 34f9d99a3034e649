"""Daily use end to end: status and metrics report what happened, only LLM
hosts are intercepted, and the mitmproxy commands work."""

from __future__ import annotations

import json
import ssl
import subprocess
from urllib.request import urlopen

import httpx
import pytest
from mitmproxy.test import taddons

from support.fakeprovider import CHAT, Reply
from support.proxy import free_port
from switchback.shell import addons as switchback_addons
from switchback.vocabulary import Reason


def get(port: int, path: str) -> str:
    with urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, matched by name and labels."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and found == wanted:
            return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}} in:\n{text}")


def test_status_and_metrics_report_cooldown_and_protocol_switch(fakes, proxy):
    limited, chat_only = fakes("limited"), fakes("chatonly", paths=(CHAT,))
    status_port = free_port()
    running = proxy(f"""
providers:
  limited: {{base_url: "{limited.base_url}", keys: [k-limited]}}
  chatonly: {{base_url: "{chat_only.base_url}", keys: [k-chat]}}
fallbacks: {{"*": [chatonly/*]}}
""", extra=("--set", f"switchback_status_port={status_port}"))
    limited.script(Reply(status=429, headers={"retry-after": "40"},
                         body={"error": {"message": "Rate limit reached"}}))
    client = running.openai(limited.base_url)
    assert client.responses.create(model="gpt-4o", input="hi").output_text == \
        "hello from chatonly"

    status = json.loads(get(status_port, "/status"))
    (cooling,) = [c for c in status["cooldowns"] if c["provider"] == "limited"]
    # a rate limit cools the key for that model (#17)
    assert cooling["scope"] == "key_model" and cooling["reason"] == "rate limit"
    assert cooling["model"] == "gpt-4o"
    assert 35 < cooling["remaining_s"] <= 40
    assert cooling["key"].startswith("#") and "k-limited" not in json.dumps(status)
    assert {"provider": "chatonly", "model": "gpt-4o", "client": "responses",
            "protocol": "chat"} in status["protocols"]
    assert status["counters"]["switchback_protocol_switches"] == 1
    assert status["counters"]["switchback_failovers"] == 1
    names = {p["name"]: p for p in status["providers"]}
    assert names["limited"]["configured"] and names["limited"]["keys"][0] == cooling["key"]

    metrics = get(status_port, "/metrics")
    assert metric(metrics, "switchback_cooldowns_total", provider="limited", scope="key_model",
                  reason="rate limit") == 1
    assert metric(metrics, "switchback_protocol_switches_total", provider="chatonly",
                  to="chat") == 1
    assert metric(metrics, "switchback_calls_total", provider="chatonly", outcome="ok") == 1
    assert metric(metrics, "switchback_attempts_total", provider="limited", result="429") == 1
    assert metric(metrics, "switchback_upstream_seconds_count", provider="chatonly") == 2
    assert metric(metrics, "switchback_first_byte_seconds_count", provider="limited") == 1


def tls_call(running, fake, ca) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(proxy=running.url, verify=context, trust_env=False, timeout=10) as http:
        return http.post(fake.base_url + "/chat/completions", json={"model": "m"})


def test_only_llm_hosts_are_intercepted(fakes, proxy, server_cert):
    llm, other = fakes("llm"), fakes("other")
    running = proxy(f'providers: {{llm: {{base_url: "{llm.base_url}"}}}}\n')
    # The other host presents its own certificate: trusting only its CA works.
    assert tls_call(running, other, server_cert.ca).json()["choices"][0]["message"][
        "content"] == "hello from other"
    with pytest.raises(httpx.ConnectError):
        tls_call(running, other, running.ca)  # not mitmproxy's certificate
    # The provider host is intercepted: mitmproxy's CA is what the client sees.
    assert tls_call(running, llm, running.ca).status_code == 200
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", running.url,
                           "--cacert", str(server_cert.ca), "-d", "{}",
                           other.base_url + "/chat/completions"],
                          capture_output=True, text=True, timeout=20)
    assert "hello from other" in done.stdout


def test_intercept_all_option(fakes, proxy, server_cert):
    other = fakes("other")
    running = proxy("{}", extra=("--set", "switchback_intercept=all"))
    assert tls_call(running, other, running.ca).status_code == 200
    with pytest.raises(httpx.ConnectError):
        tls_call(running, other, server_cert.ca)


def test_status_and_reset_commands(tmp_path):
    config = tmp_path / "switchback.yaml"
    config.write_text('providers: {p: {base_url: "https://localhost:9/v1", keys: [sk-x]}}\n')
    addons = switchback_addons()
    runtime = addons[0]
    with taddons.context(*addons) as tctx:
        tctx.configure(runtime, switchback_config=str(config))
        runtime.learned.health.cool(("key", "p", "#abc"), 30, Reason.RATE_LIMIT)
        status = json.loads(tctx.master.commands.call("switchback.status"))
        assert status["cooldowns"][0]["reason"] == "rate limit"
        assert "sk-x" not in json.dumps(status)
        tctx.master.commands.call("switchback.reset")
        assert json.loads(tctx.master.commands.call("switchback.status"))["cooldowns"] == []
