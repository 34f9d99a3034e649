"""The engine against a network that is not polite: raw bytes from the fake
(events coalesced in one write, split across writes, compressed, commented,
pinged, HTML where SSE was due), clients that hang up, odd request bodies.
Each test here failed on the first version of the engine."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from support.proxy import free_port, mitmproxy_command
from support.fakeprovider import (CHAT, RESPONSES, Reply, chat_events, response_events, sse,
                                  sse_bytes)

CLIENT_KEY = "sk-client-key"
TEXT = "hello primary world of streams"


def config(primary, backup, extra: str = "") -> str:
    return f"""
providers:
  primary: {{base_url: "{primary.base_url}"}}
  backup: {{base_url: "{backup.base_url}", keys: [sk-backup-literal-0123]}}
fallbacks: {{"*": [backup/*]}}
{extra}
"""


@pytest.fixture
def pair(shared):
    primary, backup = shared.fake("primary"), shared.fake("backup")
    return primary, backup, shared.proxy(config(primary, backup))


def post(running, url: str, body: dict, **kwargs) -> httpx.Response:
    with running.http_client(timeout=30) as http:
        return http.post(url, json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"},
                         **kwargs)


def chat_body(stream: bool = True, **extra) -> dict:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}],
            **extra}


def chat_text(raw: bytes) -> tuple[str, list[str]]:
    """Text and finish reasons of a chat SSE body."""
    text, finishes = "", []
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            payload = json.loads(line[6:])
            assert "error" not in payload, payload
            for choice in payload["choices"]:
                text += choice["delta"].get("content") or ""
                if choice.get("finish_reason"):
                    finishes.append(choice["finish_reason"])
    return text, finishes


def responses_text(raw: bytes) -> tuple[str, list[str]]:
    """Text and event types of a Responses SSE body."""
    text, kinds = "", []
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            payload = json.loads(line[6:])
            kinds.append(payload["type"])
            if payload["type"] == "response.output_text.delta":
                text += payload["delta"]
    return text, kinds


def split_after_first_content(stream: bytes, marker: bytes) -> list[bytes]:
    """Two writes: up to and including the first event carrying `marker`, then
    everything else (which lands in the same read as that event's tail)."""
    cut = stream.index(marker)
    cut = stream.index(b"\n\n", cut) + 2
    return [stream[:cut - 5], stream[cut - 5:]]


CHAT_STREAM = sse_bytes(chat_events("m", TEXT, usage=False))
RESPONSES_STREAM = sse_bytes(response_events("m", TEXT))
SPLITS = {
    "one write": lambda s, marker: [s],
    "content and rest together": split_after_first_content,
    "byte by byte head": lambda s, marker: [bytes([b]) for b in s[:300]] + [s[300:]],
}


@pytest.mark.parametrize("split", SPLITS)
def test_coalesced_chat_stream_arrives_byte_identical(pair, split):
    primary, backup, running = pair
    primary.script(Reply(raw=SPLITS[split](CHAT_STREAM, b'"content": "hello '), raw_delay=0.002))
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert answer.status_code == 200
    assert answer.content == CHAT_STREAM
    assert chat_text(answer.content) == (TEXT, ["stop"])
    assert backup.count() == 0


@pytest.mark.parametrize("split", SPLITS)
def test_coalesced_responses_stream_arrives_byte_identical(pair, split):
    primary, backup, running = pair
    primary.script(Reply(raw=SPLITS[split](RESPONSES_STREAM, b"response.output_text.delta"),
                         raw_delay=0.002))
    answer = post(running, primary.base_url + RESPONSES,
                  {"model": "m", "stream": True, "input": "x"})
    assert answer.content == RESPONSES_STREAM
    text, kinds = responses_text(answer.content)
    assert text == TEXT and kinds[-1] == "response.completed"


def test_coalesced_stream_translated_for_a_responses_client(shared):
    chat_only = shared.fake("chatonly", paths=(CHAT,))
    running = shared.proxy(f'providers: {{only: {{base_url: "{chat_only.base_url}"}}}}\n')
    chat_only.script(Reply(raw=[sse_bytes(chat_events("m", TEXT, usage=True))]))
    answer = post(running, chat_only.base_url + RESPONSES,
                  {"model": "m", "stream": True, "input": "x"})
    text, kinds = responses_text(answer.content)
    assert text == TEXT and kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_coalesced_stream_translated_for_a_chat_client(shared):
    responses_only = shared.fake("responsesonly", paths=(RESPONSES,))
    running = shared.proxy(f'providers: {{only: {{base_url: "{responses_only.base_url}"}}}}\n')
    responses_only.script(Reply(raw=[RESPONSES_STREAM]))
    answer = post(running, responses_only.base_url + CHAT, chat_body())
    assert chat_text(answer.content) == (TEXT, ["stop"])
    assert answer.content.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_streams_arrive_intact(pair, encoding):
    primary, backup, running = pair
    small = [CHAT_STREAM[i:i + 37] for i in range(0, len(CHAT_STREAM), 37)]
    for pieces in (small, [CHAT_STREAM[:50], CHAT_STREAM[50:400], CHAT_STREAM[400:]],
                   [CHAT_STREAM]):
        primary.script(Reply(raw=pieces, raw_delay=0.002, encoding=encoding))
        answer = post(running, primary.base_url + CHAT, chat_body())
        assert answer.content == CHAT_STREAM
        assert "content-encoding" not in answer.headers
    assert backup.count() == 0


def test_a_ping_before_a_failed_response_does_not_commit(pair):
    primary, backup, running = pair
    created = {"type": "response.created", "sequence_number": 0,
               "response": {"id": "resp_bad", "object": "response", "status": "in_progress"}}
    failed = {"type": "response.failed", "sequence_number": 2,
              "response": {"id": "resp_bad", "object": "response", "status": "failed",
                           "error": {"code": "server_error", "message": "overloaded"}}}
    primary.script(Reply(raw=[sse(created), b'event: ping\ndata: {"type":"ping"}\n\n',
                              sse(failed)]))
    answer = post(running, primary.base_url + RESPONSES,
                  {"model": "m", "stream": True, "input": "x"})
    text, kinds = responses_text(answer.content)
    assert text == "hello from backup" and "response.failed" not in kinds
    assert b"resp_bad" not in answer.content and b"ping" not in answer.content


def test_comments_before_commit_are_held_and_dropped_with_a_failed_attempt(pair):
    primary, backup, running = pair
    primary.script(Reply(raw=[b": PROCESSING\n\n", sse({"error": {"message": "overloaded"}})]))
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert chat_text(answer.content)[0] == "hello from backup"
    assert b"PROCESSING" not in answer.content


def test_comments_after_commit_reach_the_client(pair):
    primary, backup, running = pair
    events = chat_events("m", TEXT, usage=False)
    stream = [sse(events[0]), sse(events[1]), b": keepalive\n\n", *map(sse, events[2:])]
    primary.script(Reply(raw=stream))
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert answer.content == b"".join(stream)


@pytest.mark.parametrize("content_type,body", [
    ("text/html", b"<html><body>502 Bad Gateway</body></html>"),
    ("application/json", b'{"status": "ok"}'),
], ids=["html", "json"])
def test_a_200_that_is_not_a_stream_moves_on(pair, content_type, body):
    primary, backup, running = pair
    page = not body.startswith(b"{")  # a page is tried once more, as transient (#17)
    primary.script(*[Reply(raw=[body], content_type=content_type)] * (2 if page else 1))
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert chat_text(answer.content)[0] == "hello from backup"
    assert primary.count() == (2 if page else 1) and backup.count() == 1


def test_a_stream_that_ends_without_an_answer_moves_on(pair):
    primary, backup, running = pair
    events = chat_events("m", TEXT, usage=False)
    primary.script(Reply(raw=[sse(events[0])]))  # a role chunk, then the end
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert chat_text(answer.content)[0] == "hello from backup"


def test_garbage_before_commit_moves_on(pair):
    primary, backup, running = pair
    primary.script(Reply(raw=[b"data: {not json at all\n\n", CHAT_STREAM]))
    answer = post(running, primary.base_url + CHAT, chat_body())
    assert chat_text(answer.content)[0] == "hello from backup"


def test_a_chat_client_is_never_translated_after_a_responses_client(pair):
    primary, backup, running = pair
    post(running, primary.base_url + RESPONSES, {"model": "m", "input": "x"})
    post(running, primary.base_url + CHAT, chat_body(stream=False, n=2, seed=7))
    post(running, primary.base_url + CHAT, chat_body())
    assert [s.path.rsplit("/v1", 1)[1] for s in primary.seen] == [RESPONSES, CHAT, CHAT]
    assert primary.seen[1].body["n"] == 2 and primary.seen[1].body["seed"] == 7


def test_a_key_echoed_in_an_error_body_is_masked(pair):
    primary, backup, running = pair
    down = Reply(status=503, body={"error": {"message": "down"}})
    primary.script(down, down)  # a one-off 503 is retried once (#17)
    backup.script(Reply(status=429, headers={"retry-after": "5"}, body={"error": {
        "message": "Rate limit reached for key sk-backup-literal-0123 in org x",
        "code": "rate_limit_exceeded"}}))
    answer = post(running, primary.base_url + CHAT, chat_body(stream=False))
    assert answer.status_code == 429
    assert b"sk-backup-literal-0123" not in answer.content
    assert "Rate limit reached for key" in answer.json()["error"]["message"]
    assert "sk-backup-literal-0123" not in running.output()


def test_a_client_hangup_before_the_first_byte_closes_the_upstream(pair):
    primary, backup, running = pair
    primary.script(Reply(first_byte_delay=8))
    with running.http_client(timeout=httpx.Timeout(30, read=0.5)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(primary.base_url + CHAT, json=chat_body(),
                      headers={"authorization": f"Bearer {CLIENT_KEY}"})
    deadline = time.monotonic() + 4  # well inside the fake's 8 s wait
    while not primary.hangups and time.monotonic() < deadline:
        time.sleep(0.05)
    assert primary.hangups, "the upstream was left waiting after the client hung up"
    assert backup.count() == 0


def test_stream_large_bodies_is_refused_with_the_reason(tmp_path, confdir):
    # mitmproxy streams a large request body on before any hook can hold it,
    # which would send LLM calls past Switchback unseen: refuse, and say so.
    config = tmp_path / "switchback.yaml"
    config.write_text("providers: {}\n")
    command = mitmproxy_command("mitmdump", free_port(), confdir, None, config,
                                ("--set", "stream_large_bodies=1k"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "stream_large_bodies" in done.stdout + done.stderr
    assert "Unset stream_large_bodies" in done.stdout + done.stderr


def test_deeply_nested_json_passes_through_without_a_traceback(pair):
    primary, backup, running = pair
    raw = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with running.http_client(timeout=30) as http:
        answer = http.post(primary.base_url + CHAT, content=raw,
                           headers={"content-type": "application/json"})
    assert answer.status_code == 200 and primary.count() == 1  # the fake's own answer
    assert "Traceback" not in running.output()
    assert running.output().count("through untouched: the body is not a JSON object") == 1


def read_http_response(tls: ssl.SSLSocket) -> bytes:
    """One HTTP/1.1 response with a chunked or sized body, read off a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536) or b"EOF"
        assert not data.endswith(b"EOF"), data
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        while not rest.endswith(b"0\r\n\r\n"):
            more = tls.recv(65536)
            assert more, "connection closed mid-body"
            rest += more
    return head


def test_the_clients_connection_is_reused_after_a_stream(pair):
    primary, backup, running = pair
    port = primary.base_url.split(":")[2].split("/")[0]
    raw = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    raw.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nhost: localhost:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    tls = ssl.create_default_context(cafile=str(running.ca)).wrap_socket(
        raw, server_hostname="localhost")
    body = json.dumps(chat_body()).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:{port}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
               f"authorization: Bearer {CLIENT_KEY}\r\n\r\n").encode() + body
    with tls:
        for _ in range(3):
            tls.sendall(request)
            head = read_http_response(tls)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"connection: close" not in head.lower()
            assert b"keep-alive" not in head.lower()
    assert primary.count() == 3
