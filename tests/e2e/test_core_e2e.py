"""End to end: real mitmdump + Switchback, fake providers over TLS on loopback,
and real clients (the openai SDK, curl). Every test touches loopback only."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest

from support.fakeprovider import CHAT, Reply

CLIENT_KEY = "sk-client-key"


def two_providers(primary, backup, timeouts: str = "", primary_keys: str = "") -> str:
    return f"""
providers:
  primary:
    base_url: {primary.base_url}
{primary_keys}
  backup:
    base_url: {backup.base_url}
    keys: [sk-backup-literal]
fallbacks:
  "*": [backup/*]
{timeouts}
"""


@pytest.fixture
def pair(shared):
    """primary (client's key) → backup (configured key), and an SDK client."""
    primary, backup = shared.fake("primary"), shared.fake("backup")
    running = shared.proxy(two_providers(primary, backup, timeouts="timeouts:\n  first_byte: 1s\n"
                                                             "  response: 1s"))
    return primary, backup, running, running.openai(primary.base_url)


def chat_text(client, stream: bool, model: str = "gpt-4o") -> str:
    messages = [{"role": "user", "content": "hi"}]
    if not stream:
        return client.chat.completions.create(model=model, messages=messages) \
            .choices[0].message.content
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


FAULTS = {
    "429": Reply(status=429, headers={"retry-after": "20"},
                 body={"error": {"message": "Rate limit reached", "type": "requests",
                                 "code": "rate_limit_exceeded"}}),
    "500": Reply(status=500, body={"error": {"message": "boom", "type": "server_error"}}),
    "dropped connection": Reply(drop=True),
    "first-byte timeout": Reply(first_byte_delay=3),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", FAULTS)
def test_fallback_on_fault(pair, fault, stream):
    primary, backup, running, client = pair
    # A one-off 500 or reset is retried once on the same provider (#17): twice moves on.
    tries = 2 if fault in ("500", "dropped connection") else 1
    primary.script(*[FAULTS[fault]] * tries)
    assert chat_text(client, stream) == "hello from backup"
    assert primary.count(CHAT) == tries and backup.count(CHAT) == 1
    assert backup.seen[0].body["model"] == "gpt-4o"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_fallback_on_refused_connection(fakes, proxy, stream):
    backup = fakes("backup")
    dead = fakes("dead")
    dead_url = dead.base_url
    dead.__exit__(None, None, None)  # nothing listens there any more
    running = proxy(f"""
providers:
  primary: {{base_url: "{dead_url}"}}
  backup: {{base_url: "{backup.base_url}", keys: [sk-backup-literal]}}
fallbacks: {{"*": [backup/*]}}
""")
    client = running.openai(dead_url)
    assert chat_text(client, stream) == "hello from backup"
    running.log_line("primary refused")


@pytest.mark.parametrize("protocol", ["chat", "responses"])
def test_first_event_error_falls_back_and_leaks_nothing(pair, protocol):
    primary, backup, running, client = pair
    if protocol == "chat":
        primary.script(Reply(events=[{"error": {"message": "overloaded", "type": "server_error"}},
                                     "[DONE]"]))
        text = chat_text(client, stream=True)
    else:
        primary.script(Reply(events=[
            {"type": "response.created", "sequence_number": 0,
             "response": {"id": "resp_bad", "object": "response", "status": "in_progress"}},
            {"type": "response.failed", "sequence_number": 1,
             "response": {"id": "resp_bad", "object": "response", "status": "failed",
                          "error": {"code": "server_error", "message": "overloaded"}}}]))
        events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
        # Nothing of the failed attempt: one stream, from the backup only.
        ids = {e.response.id for e in events if getattr(e, "response", None) is not None}
        assert len(ids) == 1 and "resp_bad" not in ids
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "hello from backup"
    assert primary.count() == 1 and backup.count() == 1


def test_failed_attempt_leaks_no_byte_to_curl(pair):
    primary, backup, running, _ = pair
    primary.script(Reply(events=[{"error": {"message": "LEAKED-MARKER", "type": "x"}}]))
    out = curl(running, primary.base_url + "/chat/completions",
               {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert "LEAKED-MARKER" not in out.stdout
    assert "hello from backup" in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in out.stdout.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert out.stdout.rstrip().endswith("data: [DONE]")


def test_mid_stream_cut_nobody_continues_ends_chat_stream_with_error_and_done(pair):
    primary, backup, running, client = pair
    primary.script(Reply(cut_after=3, text="one two three four five"))
    backup.script(Reply(status=503))  # asked to continue it, and cannot
    out = curl(running, primary.base_url + "/chat/completions",
               {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    data = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == "switchback_stream_broken"
    assert "one two " == "".join(json.loads(d)["choices"][0]["delta"].get("content", "")
                                 for d in data[:-2])
    assert backup.count() == 1  # the one attempt to continue it
    # What the client got is what the call's report says: no "ok", and the
    # original break named, not the rescue's failure.
    line = running.log_line("chat m stream")
    assert "stream → broken via primary" in line
    assert "primary cut after 3 chunks → backup 503" in line, line
    assert "stream broke after commit (upstream stream ended before the answer was complete)" \
        in line


def test_mid_stream_cut_nobody_continues_ends_responses_stream_with_failed(pair):
    primary, backup, running, client = pair
    primary.script(Reply(cut_after=6, text="one two three four five"))
    backup.script(Reply(status=503))
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.id == events[0].response.id
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    assert "stream → broken via primary" in running.log_line("responses gpt-4o stream")


def test_fallback_never_sees_client_key(pair):
    primary, backup, running, client = pair
    primary.script(FAULTS["500"], FAULTS["500"])  # retried once (#17), then the backup
    chat_text(client, stream=False)
    assert primary.seen[0].key == CLIENT_KEY
    assert backup.seen[0].key == "sk-backup-literal"
    assert all(CLIENT_KEY not in json.dumps(s.headers) for s in backup.seen)


def test_400_passes_through_unchanged(pair):
    primary, backup, running, _ = pair
    body = {"error": {"message": "bad temperature", "type": "invalid_request_error",
                      "param": "temperature", "code": None}}
    primary.script(Reply(status=400, body=body, headers={"x-request-id": "req_123"}))
    with running.http_client() as http:
        answer = http.post(primary.base_url + "/chat/completions",
                           headers={"authorization": f"Bearer {CLIENT_KEY}"},
                           json={"model": "m", "messages": []})
    assert answer.status_code == 400
    assert answer.json() == body
    assert answer.headers["x-request-id"] == "req_123"
    assert backup.count() == 0


def test_exhaustion_keeps_429_and_retry_after(shared):
    primary, backup = shared.fake("primary"), shared.fake("backup")
    running = shared.proxy(two_providers(primary, backup))
    limited = Reply(status=429, headers={"retry-after": "20"},
                    body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    primary.script(limited)
    backup.script(Reply(status=429, headers={"retry-after": "7"},
                        body={"error": {"message": "Rate limit reached",
                                        "code": "rate_limit_exceeded"}}))
    client = running.openai(primary.base_url)
    with pytest.raises(openai.RateLimitError) as caught:
        chat_text(client, stream=False)
    headers = caught.value.response.headers
    assert caught.value.status_code == 429
    assert 6 <= int(headers["retry-after"]) <= 7
    assert 6000 <= int(headers["retry-after-ms"]) <= 7000


def test_cooling_provider_is_skipped_without_a_request(pair):
    primary, backup, running, client = pair
    primary.script(FAULTS["429"])
    assert chat_text(client, stream=False) == "hello from backup"
    assert chat_text(client, stream=True) == "hello from backup"
    assert primary.count() == 1  # the second call never reached the cooling primary
    assert backup.count() == 2
    assert "primary 429 (retry 20s) → backup 200" in running.output()


def test_non_llm_traffic_passes_untouched(pair):
    primary, backup, running, _ = pair
    with running.http_client() as http:
        answer = http.post(primary.base_url + "/embeddings", json={"model": "m", "input": "x"})
    assert answer.status_code == 404  # the fake's own answer, not Switchback's
    assert primary.count("/embeddings") == 1 and backup.count() == 0


def test_unparseable_body_passes_untouched(pair):
    primary, backup, running, _ = pair
    primary.script(Reply(status=400, body={"error": {"message": "could not parse JSON"}}))
    with running.http_client() as http:
        answer = http.post(primary.base_url + "/chat/completions", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "could not parse JSON"
    assert backup.count() == 0


def test_stream_with_chunked_request_body(pair):
    primary, backup, running, _ = pair
    body = json.dumps({"model": "m", "stream": True, "messages": []}).encode()

    def chunked():
        yield body[:10]
        yield body[10:]
    with running.http_client() as http:
        answer = http.post(primary.base_url + "/chat/completions", content=chunked(),
                           headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert answer.text.rstrip().endswith("data: [DONE]")
    assert "hello from primary" in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in answer.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"])


def test_malformed_stream_falls_back(pair):
    primary, backup, running, client = pair
    primary.script(Reply(events=[{"choices": ["not an object"]}, {"choices": 7}]))
    assert chat_text(client, stream=True) == "hello from backup"


def test_client_disconnect_closes_upstream(pair):
    primary, backup, running, _ = pair
    primary.script(Reply(event_delay=0.2, text=" ".join(["word"] * 100)))
    with running.http_client() as http:
        with http.stream("POST", primary.base_url + "/chat/completions",
                         json={"model": "m", "stream": True, "messages": []}) as answer:
            next(answer.iter_lines())
    deadline = time.monotonic() + 10
    while primary.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert primary.disconnects == 1


def curl(running, url: str, body: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "-N", "--max-time", "20", "--proxy", running.url,
         "--cacert", str(running.ca), "-H", f"authorization: Bearer {CLIENT_KEY}",
         "-H", "content-type: application/json", "-d", json.dumps(body), url],
        capture_output=True, text=True, timeout=30, check=True)


def test_curl_non_streaming_fallback(pair):
    primary, backup, running, _ = pair
    primary.script(FAULTS["500"], FAULTS["500"])  # retried once (#17), then the backup
    out = curl(running, primary.base_url + "/chat/completions",
               {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "hello from backup"


def test_flow_comment_and_log_never_show_keys(pair):
    primary, backup, running, client = pair
    primary.script(FAULTS["429"])
    chat_text(client, stream=False)
    log = running.output()
    assert CLIENT_KEY not in log and "sk-backup-literal" not in log
