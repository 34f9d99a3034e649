"""The mitmproxy shell end to end: startup refusal on a bad config, mitmweb's
view of a call, and mitmproxy's upstream TLS and upstream-proxy options."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from urllib.request import Request, urlopen

import aiohttp
import httpx
import pytest
from mitmproxy import io
from mitmproxy.version import VERSION

from support.connectproxy import ConnectProxy
from support.fakeprovider import CHAT, LIMITED, PAIR
from support.proxy import ADDON, BIN, free_port, running_proxy



def test_malformed_config_stops_the_proxy_with_file_key_and_fix(tmp_path, confdir):
    config = tmp_path / "switchback.yaml"
    config.write_text("providers:\n  p:\n    base_url: https://localhost:1/v1\n"
                      "    protocol: grpc\n")
    done = subprocess.run(
        [str(BIN / "mitmdump"), "-s", str(ADDON), "--listen-host", "127.0.0.1",
         "--listen-port", str(free_port()), "--set", f"confdir={confdir}",
         "--set", f"switchback_config={config}"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"{config}: providers.p.protocol: unknown protocol 'grpc'" in output
    assert "Fix: use one of: auto, chat, responses, messages" in output


WEB_PASSWORD = "switchback-test"
# mitmweb 12 asks for a token (web_password); mitmweb 11 has no such option.
WEB_AUTH = ("--set", f"web_password={WEB_PASSWORD}") if int(VERSION.split(".")[0]) >= 12 else ()


def web_get(web_port: int, path: str) -> bytes:
    request = Request(f"http://127.0.0.1:{web_port}{path}",
                      headers={"authorization": f"Bearer {WEB_PASSWORD}"})
    with urlopen(request, timeout=5) as answer:
        return answer.read()


def flows(web_port: int) -> list[dict]:
    return json.loads(web_get(web_port, "/flows"))


def settled_flows(web_port: int, count: int) -> list[dict]:
    """The commented flows once `count` are there and every response has ended."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = [f for f in flows(web_port) if f.get("comment")]
        if len(seen) >= count and all(f.get("response") and f["response"].get(
                "timestamp_end") for f in seen):
            return seen
        time.sleep(0.1)
    return seen


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_mitmweb_flow_shows_client_url_and_trail(fakes, proxy, stream):
    primary, backup = fakes("primary"), fakes("backup")
    web_port = free_port()
    running = proxy(PAIR.format(primary=primary.base_url, backup=backup.base_url),
                    tool="mitmweb", extra=("--set", f"web_port={web_port}",
                                           "--set", "web_open_browser=false", *WEB_AUTH))
    primary.script(LIMITED)
    client = running.openai(primary.base_url)
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        list(client.chat.completions.create(model="m", messages=messages, stream=True))
    else:
        client.chat.completions.create(model="m", messages=messages)
    seen = settled_flows(web_port, 3)
    client_flows = [f for f in seen if not f["comment"].startswith("↪")]
    attempts = [f for f in seen if f["comment"].startswith("↪")]
    assert len(client_flows) == 1
    flow = client_flows[0]
    assert (flow["request"]["host"], flow["request"]["port"], flow["request"]["path"]) == \
        ("localhost", primary.port, "/v1/chat/completions")
    # The comment column (mitmweb's web_columns) shows the marks, the trail, the
    # attempts, the tokens and cost (the fake's model "m" has no price), and the
    # call's name, which its attempts' comments share.
    name = flow["id"][:8]
    assert flow["comment"] == ("🔀 primary 429 (retry 20s) → backup 200 · 2 attempts · "
                               f"5 in, 3 out tokens, unpriced · call {name}")
    assert flow["response"]["status_code"] == 200
    assert flow["marked"] == "🔀"  # failed over
    # The answer's body is viewable, streamed or not.
    body = web_get(web_port, f"/flows/{flow['id']}/response/content.data")
    assert b"hello " in body and b"backup" in body
    # Each upstream attempt is a flow of its own, linked to the client's.
    assert [(a["request"]["port"], a["response"]["status_code"]) for a in attempts] == \
        [(primary.port, 429), (backup.port, 200)]
    assert all(a["comment"].endswith(f"of call {name}") for a in attempts)
    assert [a["marked"] for a in attempts] == ["↪", "↪"]
    everything = json.dumps(flows(web_port))
    assert "sk-client-key" not in everything and "sk-backup-literal" not in everything
    assert "<key #" in everything  # credentials shown as fingerprints


def test_mitmweb_shows_a_call_that_failed_over_and_was_translated_as_both(fakes, proxy):
    primary, backup = fakes("primary"), fakes("backup", paths=(CHAT,))
    web_port = free_port()
    running = proxy(PAIR.format(primary=primary.base_url, backup=backup.base_url),
                    tool="mitmweb", extra=("--set", f"web_port={web_port}",
                                           "--set", "web_open_browser=false", *WEB_AUTH))
    primary.script(LIMITED)
    events = list(running.openai(primary.base_url).responses.create(
        model="m", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    (flow,) = [f for f in settled_flows(web_port, 4)
               if not f["comment"].startswith("↪")]
    assert flow["comment"].startswith("🔀🔄 primary 429 (retry 20s) → backup 404 (switch to "
                                      "chat) → backup[chat] 200 · 3 attempts · 5 in, 3 out "
                                      "tokens, unpriced · call ")
    assert flow["marked"] == "🔀"


def test_upstream_tls_is_verified_by_default(fakes, proxy):
    primary = fakes("primary")
    running = proxy(f'providers: {{primary: {{base_url: "{primary.base_url}"}}}}',
                    trust_upstream=False)
    with running.http_client() as http:
        answer = http.post(primary.base_url + "/chat/completions", json={"model": "m"})
    assert answer.status_code == 502  # the fake's private CA is not trusted
    error = answer.json()["error"]
    assert error["code"] == "upstream_tls_error"
    where = f"localhost:{primary.port}"
    # The client and the trail both say which host, why, and the option that fixes it.
    for text in (error["message"], running.output()):
        assert where in text and "certificate verify failed" in text
        assert "ssl_verify_upstream_trusted_ca" in text and "ssl_insecure" in text
    assert primary.count() == 0
    assert "primary tls error (" in running.output()


def test_ssl_insecure_is_honoured(fakes, proxy):
    primary = fakes("primary")
    running = proxy(PAIR.format(primary=primary.base_url, backup=primary.base_url),
                    trust_upstream=False, extra=("--set", "ssl_insecure=true"))
    client = running.openai(primary.base_url)
    answer = client.chat.completions.create(model="m", messages=[])
    assert answer.choices[0].message.content == "hello from primary"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_proxy_mode_is_honoured(fakes, proxy, stream):
    primary, backup = fakes("primary"), fakes("backup")
    with ConnectProxy() as corporate:
        running = proxy(PAIR.format(primary=primary.base_url, backup=backup.base_url),
                        extra=("--mode", f"upstream:http://127.0.0.1:{corporate.port}"))
        primary.script(LIMITED)
        with running.http_client(timeout=30) as http:
            body = {"model": "m", "messages": [], "stream": stream}
            answer = http.post(primary.base_url + "/chat/completions", json=body,
                               headers={"authorization": "Bearer sk-client-key"})
        assert answer.status_code == 200
        assert "hello from backup" in (answer.text if not stream else "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in answer.text.splitlines()
            if line.startswith("data: {") and json.loads(line[6:])["choices"]))
        assert f"localhost:{primary.port}" in corporate.tunnels
        assert f"localhost:{backup.port}" in corporate.tunnels
    assert primary.count(CHAT) == 1 and backup.count(CHAT) == 1


def test_addon_makes_connections_lazy_so_a_dead_origin_can_fall_back(fakes, proxy):
    backup, dead = fakes("backup"), fakes("dead")
    dead_url = dead.base_url
    dead.__exit__(None, None, None)  # nothing listens there any more
    running = proxy(PAIR.format(primary=dead_url, backup=backup.base_url),
                    extra=("--set", "connection_strategy=eager"))  # the user forgot
    answer = running.openai(dead_url).chat.completions.create(model="m", messages=[])
    assert answer.choices[0].message.content == "hello from backup"
    assert "setting connection_strategy=lazy" in running.output()


def test_relayed_streams_can_be_saved_and_read_back(fakes, tmp_path, confdir, server_cert):
    primary, backup = fakes("primary"), fakes("backup")
    saved = tmp_path / "flows.mitm"
    with running_proxy(tmp_path, confdir, server_cert.ca,
                       PAIR.format(primary=primary.base_url, backup=backup.base_url),
                       extra=("-w", str(saved))) as running:
        # Read to the body's end: an SDK hangs up at `[DONE]`, which may come a
        # moment before the end of the HTTP body, and mitmproxy then records
        # the flow as the client's disconnect (the client had everything).
        with running.http_client(timeout=30) as http:
            answer = http.post(primary.base_url + "/chat/completions",
                               headers={"authorization": "Bearer sk-client-key"},
                               json={"model": "m", "stream": True,
                                     "messages": [{"role": "user", "content": "hi"}]})
        assert b'"content": "primary"' in answer.content  # its last word
        assert answer.content.endswith(b"data: [DONE]\n\n")
    # mitmdump has stopped: everything it wrote is on disk.
    with saved.open("rb") as f:
        (flow,) = list(io.FlowReader(f).stream())
    assert flow.request.pretty_url == primary.base_url + "/chat/completions"
    assert flow.response.status_code == 200 and flow.error is None
    assert "Traceback" not in running.output()


async def upgrade(running, url: str) -> int:
    """A real WebSocket client's upgrade through the proxy: the status it got."""
    context = ssl.create_default_context(cafile=str(running.ca))
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, proxy=running.url, ssl=context):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


@pytest.mark.parametrize("path", ["/responses", "/realtime?model=gpt-4o-realtime"])
def test_a_websocket_upgrade_to_an_llm_endpoint_is_refused_so_clients_use_https(
        shared, path):
    primary = shared.fake("primary")
    running = shared.proxy(f'providers: {{primary: {{base_url: "{primary.base_url}"}}}}\n')
    url = primary.base_url.replace("https://", "wss://") + path
    assert asyncio.run(upgrade(running, url)) == 426
    with running.http_client() as http:  # what the client reads in the 426
        answer = http.get(primary.base_url + path, headers={
            "connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert answer.status_code == 426
    assert answer.json()["error"]["code"] == "websocket_not_supported"
    assert "supports_websockets" in answer.json()["error"]["message"]
    assert primary.count() == 0


def test_websocket_upgrades_pass_when_told(fakes, proxy):
    primary = fakes("primary")
    running = proxy(f'providers: {{primary: {{base_url: "{primary.base_url}"}}}}\n',
                    extra=("--set", "switchback_websocket=pass"))
    status = asyncio.run(upgrade(running, primary.base_url.replace("https", "wss") + "/responses"))
    assert status == 501  # the fake's own answer: it has no GET, let alone WebSocket


def test_the_status_server_is_not_reachable_through_the_proxy(proxy):
    """Only this machine's operator may read or reset it: a proxy client
    (another user of a shared proxy) gets 403, and nothing is reset."""
    running = proxy(None, status=True)
    base = f"http://127.0.0.1:{running.status_port}"
    with running.http_client(timeout=10) as through_proxy:
        for method, path in (("POST", "/reset/budgets"), ("POST", "/reset"),
                             ("GET", "/status")):
            answer = through_proxy.request(method, base + path)
            assert answer.status_code == 403
            assert answer.json()["error"]["code"] == "switchback_status_not_proxied"
    with httpx.Client(trust_env=False, timeout=10) as direct:
        assert direct.get(base + "/status").status_code == 200
    assert "budget figures reset" not in running.output()
