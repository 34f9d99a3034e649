"""A fake OpenAI-style provider: a real HTTPS server on 127.0.0.1.

It speaks the OpenAI protocols and Anthropic's Messages (`fakemessages`),
or only some, like real providers, streaming and not, and plays scripted
faults in order: a status with headers and body, a
slow first byte, an error as the first event, a stream cut midway, a
connection dropped without an answer. It records every request it gets, so
tests can count calls per path and per key and see exactly what was sent.
Like a real provider it scopes what it keeps to the key (the account) that
made it: a `previous_response_id` of another key's is "not found", and
encrypted reasoning sealed for another key is refused.

Real networks are less polite than one tidy event per write, so a reply can
also be raw: body bytes written exactly as the pieces given (several events in
one piece, one event over many), optionally compressed the way a streaming
proxy does (each piece compressed and flushed), with any content type.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import fakemessages
from .fakemessages import COUNT, MESSAGES
from .threaded import ServedInThread
from .tlsca import ServerCert

CHAT, RESPONSES = "/chat/completions", "/responses"
# One creation time for every answer: two recordings of a stream made a
# second apart must still be byte-identical.
CREATED = 1_700_000_000


@dataclass
class Reply:
    """One scripted reply. Unset fields mean "answer normally"."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-able or bytes: replaces the normal body
    events: list[Any] | None = None  # SSE payloads (dict → JSON, str → as is) replacing the stream
    first_byte_delay: float = 0.0
    event_delay: float = 0.0
    cut_after: int | None = None  # stream: drop the connection after this many events
    drop: bool = False  # close the connection without any answer
    text: str | None = None  # the answer's text
    raw: list[bytes] | None = None  # body written exactly as these pieces, one write each
    raw_delay: float = 0.01  # pause between raw pieces, so each arrives as its own read
    content_type: str = "text/event-stream"  # of a raw body
    encoding: str | None = None  # gzip, deflate, br or zstd: each raw piece compressed and flushed


# The config most failover tests use: the addressed provider with the client's
# key, and a backup with a configured one; `.format(primary=…, backup=…)`.
PAIR = """
providers:
  primary: {{base_url: "{primary}"}}
  backup: {{base_url: "{backup}", keys: [sk-backup-literal]}}
fallbacks: {{"*": [backup/*]}}
"""
LIMITED = Reply(status=429, headers={"retry-after": "20"},
                body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") or self.headers.get("x-api-key") or None


def chat_completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": CREATED,
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def chat_events(model: str, text: str, usage: bool) -> list[Any]:
    """A chat stream as OpenAI sends it: asked for usage, every chunk carries
    `"usage": null` and a last chunk without choices carries the usage."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": CREATED, "model": model}
    nothing = {"usage": None} if usage else {}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}], **nothing}]
    for word in _pieces(text):
        events.append({**base, "choices": [{"index": 0, "delta": {"content": word},
                                            "finish_reason": None}], **nothing})
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   **nothing})
    if usage:
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 5,
                                                        "completion_tokens": 3,
                                                        "total_tokens": 8}})
    events.append("[DONE]")
    return events


def response_object(model: str, text: str, status: str = "completed", rid: str = "resp_fake",
                    reasoning: dict | None = None, usage: dict | None = None) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    answer = {"id": rid, "object": "response", "created_at": CREATED,
            "status": status, "model": model, "error": None, "incomplete_details": None,
            "instructions": None, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True,
            "output": [{"type": "message", "id": "msg_fake", "status": "completed",
                        "role": "assistant", "content": content}] if status == "completed" else [],
            "usage": usage or {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
                               "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens_details": {"reasoning_tokens": 0}}}
    if reasoning is not None and status == "completed":
        answer["output"].insert(0, reasoning)
    return answer


def response_events(model: str, text: str, rid: str = "resp_fake",
                    reasoning: dict | None = None, usage: dict | None = None) -> list[Any]:
    start = response_object(model, text, status="in_progress", rid=rid)
    part = {"type": "output_text", "text": "", "annotations": []}
    item = {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant",
            "content": []}
    events: list[dict] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "part": part},
    ]
    for piece in _pieces(text):
        events.append({"type": "response.output_text.delta", "item_id": "msg_fake",
                       "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})
    done_part = {**part, "text": text}
    final = response_object(model, text, rid=rid, reasoning=reasoning, usage=usage)
    events += [
        {"type": "response.output_text.done", "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "part": done_part},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][-1]},
        {"type": "response.completed", "response": final},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


TOOL_ARGUMENTS = '{"city": "Paris"}'


def tool_name(body: dict) -> str | None:
    """The first function tool's name, when the call has tools and no tool
    result yet: then the fake answers with a call to that tool."""
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, list) and any(
            isinstance(i, dict) and (i.get("role") == "tool"
                                     or i.get("type") == "function_call_output") for i in items):
        return None
    for tool in body.get("tools") or []:
        name = (tool.get("function") or {}).get("name") or tool.get("name")
        if name:
            return name
    return None


def tool_result(body: dict) -> str | None:
    for item in body.get("messages") or body.get("input") or []:
        if isinstance(item, dict) and item.get("role") == "tool":
            return item.get("content")
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            return item.get("output")
    return None


def chat_tool_completion(model: str, name: str) -> dict:
    answer = chat_completion(model, "")
    answer["choices"][0].update(finish_reason="tool_calls", message={
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake", "type": "function",
            "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]})
    return answer


def chat_tool_events(model: str, name: str, usage: bool) -> list[Any]:
    events = chat_events(model, "", usage)
    base = {k: events[0][k] for k in ("id", "object", "created", "model")}
    fragments = [TOOL_ARGUMENTS[i:i + 4] for i in range(0, len(TOOL_ARGUMENTS), 4)]
    calls = [{**base, "choices": [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
        {"index": 0, "id": "call_fake", "type": "function",
         "function": {"name": name, "arguments": ""}}]}}]}]
    calls += [{**base, "choices": [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": f}}]}}]} for f in fragments]
    finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    return [events[0], *calls, finish, *events[3:]]


def response_tool_object(model: str, name: str, rid: str = "resp_fake") -> dict:
    answer = response_object(model, "", rid=rid)
    answer["output"] = [{"type": "function_call", "id": "fc_fake", "call_id": "call_fake",
                         "name": name, "arguments": TOOL_ARGUMENTS, "status": "completed"}]
    return answer


def response_tool_events(model: str, name: str, rid: str = "resp_fake") -> list[Any]:
    start = response_object(model, "", status="in_progress", rid=rid)
    final = response_tool_object(model, name, rid)
    item = {**final["output"][0], "arguments": "", "status": "in_progress"}
    events: list[dict] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
        {"type": "response.output_item.added", "output_index": 0, "item": item}]
    events += [{"type": "response.function_call_arguments.delta", "item_id": "fc_fake",
                "output_index": 0, "delta": TOOL_ARGUMENTS[i:i + 4]}
               for i in range(0, len(TOOL_ARGUMENTS), 4)]
    events += [
        {"type": "response.function_call_arguments.done", "item_id": "fc_fake",
         "output_index": 0, "arguments": TOOL_ARGUMENTS, "name": name},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": "response.completed", "response": final}]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


def _prefix(items: list) -> str:
    return json.dumps(items, sort_keys=True)


def sealed_for(key: str | None) -> str:
    """Encrypted reasoning only `key`'s account can read. Like a real
    provider's, it does not show the key (Switchback would mask it)."""
    return "gAAAA" + hashlib.sha256(f"sealed for {key}".encode()).hexdigest()[:40]


def sse(payload: Any, eol: str = "\n") -> bytes:
    if isinstance(payload, str):
        return f"data: {payload}{eol}{eol}".encode()
    head = f"event: {payload['type']}{eol}" if "type" in payload else ""  # Responses events
    return f"{head}data: {json.dumps(payload)}{eol}{eol}".encode()


def sse_bytes(events: list[Any], eol: str = "\n") -> bytes:
    """A whole stream's bytes, with the given line ending."""
    return b"".join(sse(e, eol) for e in events)


def compressor(encoding: str) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """(compress one piece and flush it, end the stream) — as a streaming proxy does."""
    if encoding in ("gzip", "deflate"):
        state = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
        return (lambda piece: state.compress(piece) + state.flush(zlib.Z_SYNC_FLUSH),
                lambda: state.flush(zlib.Z_FINISH))
    if encoding == "br":
        import brotli
        brotli_state = brotli.Compressor()
        return (lambda piece: brotli_state.process(piece) + brotli_state.flush(),
                brotli_state.finish)
    if encoding == "zstd":
        try:
            from compression.zstd import ZstdCompressor  # Python 3.14+
        except ImportError:
            from backports.zstd import ZstdCompressor
        zstd_state = ZstdCompressor()
        return (lambda piece: zstd_state.compress(piece, ZstdCompressor.FLUSH_BLOCK),
                lambda: zstd_state.flush(ZstdCompressor.FLUSH_FRAME))
    raise ValueError(encoding)


class FakeProvider(ServedInThread):
    """Start with `with FakeProvider(cert, "name") as fake:`; it stops on exit."""

    def __init__(self, cert: ServerCert, name: str,
                 paths: tuple[str, ...] = (CHAT, RESPONSES), default: Reply | None = None
                 ) -> None:
        self.name, self.paths, self.default = name, paths, default or Reply()
        self.seen: list[Seen] = []
        self.disconnects = 0  # streams whose client went away mid-way
        self.hangups: list[float] = []  # when a client went away while the fake waited to answer
        self.responses: dict[str, str | None] = {}  # response id → the key that made it
        self.cache: dict[str | None, set[str]] = {}  # per key: input prefixes it has seen
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert, cert.key)
        context.set_alpn_protocols(["http/1.1"])
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        super().__init__(server)

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}/v1"

    def reset(self) -> None:
        """Forget what was seen and scripted: a fresh fake for the next test."""
        with self._lock:
            self.seen.clear()
            self._script.clear()
            self.disconnects = 0
            self.hangups.clear()
            self.responses.clear()
            self.cache.clear()

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def count(self, path: str | None = None, key: str | None = None) -> int:
        return sum(1 for s in self.seen if (path is None or s.path.endswith(path))
                   and (key is None or s.key == key))

    def cached_usage(self, body: dict, key: str | None, output: list[dict]) -> dict | None:
        """Usage as an account's prompt cache makes it, for a call that names
        its session (`prompt_cache_key`, as Codex sends): the input's tokens,
        and as cached the longest prefix of its items this key has seen
        before. What this turn sent and answered is then cached for the key."""
        items = body.get("input")
        if "prompt_cache_key" not in body or not isinstance(items, list):
            return None
        seen = self.cache.setdefault(key, set())
        sizes = [max(1, len(json.dumps(item, sort_keys=True)) // 4) for item in items]
        cached = 0
        for n in range(len(items), 0, -1):
            if _prefix(items[:n]) in seen:
                cached = sum(sizes[:n])
                break
        whole = [*items, *output]
        seen.update(_prefix(whole[:n]) for n in range(1, len(whole) + 1))
        return {"input_tokens": sum(sizes), "output_tokens": 3, "total_tokens": sum(sizes) + 3,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens_details": {"reasoning_tokens": 0}}

    def _account_check(self, body: dict, key: str | None) -> tuple[int, dict] | None:
        """What a real provider refuses across accounts: another key's response
        id, reasoning sealed for another key."""
        previous = body.get("previous_response_id")
        if previous is not None and self.responses.get(previous, "") != key:
            return 404, {"error": {"message": f"Previous response with id '{previous}' not found.",
                                   "type": "invalid_request_error",
                                   "param": "previous_response_id",
                                   "code": "previous_response_not_found"}}
        items = body.get("input") if isinstance(body.get("input"), list) else []
        if any(isinstance(i, dict) and i.get("type") == "reasoning" and i.get("encrypted_content")
               and i["encrypted_content"] != sealed_for(key) for i in items):
            return 400, {"error": {"message": "The encrypted content could not be verified.",
                                   "type": "invalid_request_error",
                                   "code": "invalid_encrypted_content"}}
        return None

    def _next(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body are separate writes: without this, Nagle and
                # delayed ACKs add 40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                """A model list, as providers answer GET …/models; elsewhere, as
                before the fake had a GET: 501 (a WebSocket test relies on it)."""
                path = self.path.split("?")[0]
                if not path.endswith("/models"):
                    return self.send_error(501, f"Unsupported method ({self.command!r})")
                fake.seen.append(Seen(path, {k.lower(): v for k, v in self.headers.items()}, {}))
                self._send(200, {"object": "list", "data": [
                    {"id": f"{fake.name}-model", "object": "model", "created": CREATED,
                     "owned_by": fake.name}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except (ValueError, RecursionError):
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                path = self.path.split("?")[0]
                fake.seen.append(Seen(path, {k.lower(): v for k, v in self.headers.items()},
                                      body))
                if not any(path.endswith(p) for p in fake.paths):
                    return self._send(404, {"error": {"message": f"Invalid URL (POST {path})",
                                                      "type": "invalid_request_error",
                                                      "code": "unknown_url"}})
                reply = fake._next()
                if reply.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if self._pause(reply.first_byte_delay):
                    return
                if reply.raw is not None:
                    return self._raw(reply)
                key = fake.seen[-1].key
                if path.endswith(MESSAGES):
                    return self._messages(body, key, reply)
                if path.endswith(COUNT):
                    return self._send(reply.status, reply.body if reply.body is not None
                                      else fakemessages.counted(body), reply.headers)
                if path.endswith(RESPONSES) and (refusal := fake._account_check(body, key)):
                    return self._send(*refusal)
                rid = f"resp_{fake.name}_{len(fake.seen)}"
                fake.responses[rid] = key
                reasoning = {"type": "reasoning", "id": f"rs_{len(fake.seen)}", "summary": [],
                             "encrypted_content": sealed_for(key)} \
                    if "reasoning.encrypted_content" in (body.get("include") or []) else None
                model = body.get("model", "unknown")
                result = tool_result(body)
                text = reply.text or (f"weather: {result}" if result is not None
                                      else f"hello from {fake.name}")
                tool = tool_name(body)
                responses = path.endswith(RESPONSES)
                if reply.status != 200 or reply.body is not None:
                    return self._send(reply.status, reply.body, reply.headers)
                cached = fake.cached_usage(
                    body, key, response_object(model, text, rid=rid, reasoning=reasoning)["output"]
                ) if responses and not tool else None
                if body.get("stream"):
                    usage = responses or bool(
                        (body.get("stream_options") or {}).get("include_usage"))
                    if reply.events is not None:
                        events = reply.events
                    elif tool:
                        events = response_tool_events(model, tool, rid) if responses \
                            else chat_tool_events(model, tool, usage)
                    else:
                        events = response_events(model, text, rid, reasoning, cached) \
                            if responses else chat_events(model, text, usage)
                    return self._stream(events, reply)
                if tool:
                    answer = response_tool_object(model, tool, rid) if responses \
                        else chat_tool_completion(model, tool)
                else:
                    answer = response_object(model, text, rid=rid, reasoning=reasoning,
                                             usage=cached) if responses \
                        else chat_completion(model, text)
                self._send(200, answer, reply.headers)

            def _messages(self, body: dict, key: str | None, reply: Reply) -> None:
                """Anthropic's answer: scripted, a refusal of another account's
                thinking, or a message (whole or streamed)."""
                if reply.status != 200 or reply.body is not None:
                    return self._send(reply.status, reply.body, reply.headers)
                if refused := fakemessages.refusal(body, key):
                    return self._send(*refused)
                whole, events = fakemessages.answer(body, key, fake.name, reply.text)
                if events is not None:
                    return self._stream(reply.events if reply.events is not None else events,
                                        reply)
                self._send(200, whole, reply.headers)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None
                      ) -> None:
                data = body if isinstance(body, bytes) else (
                    b"" if body is None else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _pause(self, seconds: float) -> bool:
                """Wait, watching the connection: True when the client went away."""
                if seconds <= 0:
                    return False
                readable, _, _ = select.select([self.connection], [], [], seconds)
                if not readable:
                    return False
                try:
                    gone = self.connection.recv(1) == b""
                except (OSError, ssl.SSLError):
                    gone = True
                if gone:
                    with fake._lock:
                        fake.hangups.append(time.monotonic())
                    self.close_connection = True
                return gone

            def _raw(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                if reply.encoding:
                    self.send_header("content-encoding", reply.encoding)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                shrink, end = compressor(reply.encoding) if reply.encoding else (
                    lambda piece: piece, lambda: b"")
                try:
                    for piece in reply.raw or []:
                        self.wfile.write(shrink(piece))
                        self.wfile.flush()
                        time.sleep(reply.raw_delay)
                    self.wfile.write(end())
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    with fake._lock:
                        fake.disconnects += 1

            def _stream(self, events: list[Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for number, event in enumerate(events):
                        if reply.cut_after is not None and number >= reply.cut_after:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(sse(event))
                        self.wfile.flush()
                        time.sleep(reply.event_delay)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    with fake._lock:
                        fake.disconnects += 1

        return Handler
