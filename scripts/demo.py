"""Switchback in under a minute, offline: no keys, no network.

Three fake providers on 127.0.0.1 — one rate-limited, one down, one that
speaks only chat/completions — behind a real mitmdump with Switchback, and the
official openai SDK as an unmodified client. Each call prints what the client
got and what Switchback did for it.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import loopback_guard  # noqa: E402,F401  (refuse non-loopback sockets)
from support.fakeprovider import CHAT, FakeProvider, Reply  # noqa: E402
from support.proxy import Proxy, free_port, running_proxy  # noqa: E402
from support.tlsca import make_server_cert  # noqa: E402

LINE = re.compile(r"switchback: (?P<what>.*?) → (?P<outcome>[^,]+?)(?: via (?P<via>\S+))?, "
                  r"(?P<attempts>\d+) attempt\(s\), (?P<seconds>[\d.]+)s(?:, (?P<spent>[^:]+))?: "
                  r"(?P<trail>.*)")


def what_happened(proxy: Proxy, call: int) -> str:
    """The proxy's log line for call number `call`, in plain words. A stream's
    line is written once it has ended, a moment after the client read its end."""
    deadline = time.monotonic() + 10
    while len(lines := [m for m in map(LINE.search, proxy.output().splitlines()) if m]) < call \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    match = lines[call - 1]
    trail = match["trail"]
    flags = []
    if "switch to" in trail or re.search(r"\[(chat|responses)\] 200", trail):
        flags.append("SWITCHED PROTOCOL")
    if " → " in trail.split(";")[0] and match["outcome"] == "ok":
        flags.append("FAILED OVER")
    summary = f"{match['outcome']} via {match['via'] or '-'} in {match['seconds']}s" + (
        f"; {match['spent']}" if match["spent"] else "")
    return f"   {' + '.join(flags) or 'direct'}: {summary}\n   trail: {trail}"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        cert = make_server_cert(work / "upstream")
        limited = stack.enter_context(FakeProvider(cert, "ratelimited"))
        chat_only = stack.enter_context(FakeProvider(cert, "chatonly", paths=(CHAT,)))
        down_port = free_port()  # nothing listens there
        limited.script(Reply(status=429, headers={"retry-after": "30"},
                             body={"error": {"message": "Rate limit reached for gpt-4o",
                                             "type": "requests",
                                             "code": "rate_limit_exceeded"}}))
        config = f"""
providers:
  ratelimited: {{base_url: "{limited.base_url}", keys: [sk-demo-limited]}}
  down: {{base_url: "https://localhost:{down_port}/v1", keys: [sk-demo-down]}}
  chatonly: {{base_url: "{chat_only.base_url}", keys: [sk-demo-chat]}}
fallbacks:
  "*": [down/*, chatonly/*]
"""
        print("Switchback demo — everything runs on 127.0.0.1, no keys, no network.")
        print(f"  ratelimited  {limited.base_url}  (answers 429, retry-after 30s)")
        print(f"  down         https://localhost:{down_port}/v1  (refuses connections)")
        print(f"  chatonly     {chat_only.base_url}  (no /responses endpoint)")
        proxy = stack.enter_context(running_proxy(
            work, work / "confdir", cert.ca, config,
            extra=("--set", f"switchback_status_port={free_port()}")))
        print(f"  proxy        {proxy.url} (mitmdump + Switchback)\n")
        client = proxy.openai(limited.base_url, api_key="sk-demo-client")
        messages = [{"role": "user", "content": "Say hello"}]

        print("1. chat.completions.create → ratelimited")
        answer = client.chat.completions.create(model="gpt-4o", messages=messages)
        print(f"   client got: {answer.choices[0].message.content!r}")
        print(what_happened(proxy, 1))

        print("2. responses.create → ratelimited (cooling now)")
        response = client.responses.create(model="gpt-4o", input="Say hello")
        print(f"   client got: {response.output_text!r} (a Responses object, id {response.id})")
        print(what_happened(proxy, 2))

        print("3. responses.create(stream=True) → ratelimited")
        deltas = [e.delta for e in client.responses.create(model="gpt-4o", input="Say hello",
                                                           stream=True)
                  if e.type == "response.output_text.delta"]
        print(f"   client got {len(deltas)} text deltas: {''.join(deltas)!r}")
        print(what_happened(proxy, 3))

        print("4. chat.completions.create(stream=True) → ratelimited")
        chunks = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        print(f"   client got: {text!r}")
        print(what_happened(proxy, 4))
        print("\nThe client never saw a 429, a refused connection or a 404: Switchback "
              "replayed each call before any byte reached it.")


if __name__ == "__main__":
    main()
