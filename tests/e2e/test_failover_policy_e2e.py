"""Issue #17's failover policy through a real mitmdump, with the openai SDK as
the client (no retries of its own), streaming and not, in both protocols and
across a translation (a Responses client, chat-only providers). Fakes over
TLS on loopback: primary (addressed), backup (fallback) and bigger (context
fallback). Raw bytes where the answer must be exactly a page."""

from __future__ import annotations

import time

import pytest

from support.fakeprovider import CHAT, RESPONSES, Reply

RATE = {"error": {"message": "Rate limit reached", "type": "requests",
                  "code": "rate_limit_exceeded"}}
TOO_LONG = {"error": {"message": "This model's maximum context length is 128000 tokens.",
                      "type": "invalid_request_error", "param": "messages",
                      "code": "context_length_exceeded"}}
PROBE = 1.0  # seconds; cooldown.probe in the config below
MODES = {  # client protocol, stream, providers chat-only (so the call is translated)
    "chat": ("chat", False, False), "chat-stream": ("chat", True, False),
    "responses": ("responses", False, False), "responses-stream": ("responses", True, False),
    "translated": ("responses", False, True), "translated-stream": ("responses", True, True),
}


def config(primary, backup, bigger) -> str:
    return f"""
providers:
  primary: {{base_url: "{primary.base_url}", keys: [k-primary]}}
  backup: {{base_url: "{backup.base_url}", keys: [k-backup]}}
  bigger: {{base_url: "{bigger.base_url}", keys: [k-bigger]}}
fallbacks: {{"*": [backup/*]}}
context_fallbacks: {{"*": [bigger/gpt-4.1]}}
cooldown: {{floor: 30s, probe: {PROBE}s}}
timeouts: {{response: 5s, first_byte: 5s}}
"""


class Setup:
    def __init__(self, shared, mode: str) -> None:
        self.protocol, self.stream, chat_only = MODES[mode]
        kwargs = {"paths": (CHAT,)} if chat_only else {}
        suffix = "-chat" if chat_only else ""
        self.primary, self.backup, self.bigger = (
            shared.fake(f"{name}{suffix}", **kwargs) for name in ("primary", "backup", "bigger"))
        self.proxy = shared.proxy(config(self.primary, self.backup, self.bigger))
        self.client = self.proxy.openai(self.primary.base_url)
        self.path = CHAT if chat_only or self.protocol == "chat" else RESPONSES

    def ask(self, model: str = "gpt-4o") -> str:
        """The answer's text, which names the fake that served it."""
        return self._ask(model).replace("-chat", "")

    def _ask(self, model: str) -> str:
        if self.protocol == "chat":
            messages = [{"role": "user", "content": "hi"}]
            if not self.stream:
                return self.client.chat.completions.create(
                    model=model, messages=messages).choices[0].message.content
            chunks = self.client.chat.completions.create(model=model, messages=messages,
                                                         stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        if not self.stream:
            return self.client.responses.create(model=model, input="hi").output_text
        events = self.client.responses.create(model=model, input="hi", stream=True)
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")

    def sent(self, fake) -> int:
        """Requests `fake` got on the endpoint that serves (not a missing one)."""
        return fake.count(self.path)


@pytest.fixture(params=list(MODES))
def setup(shared, request) -> Setup:
    return Setup(shared, request.param)


def test_a_short_retry_after_is_waited_out_on_the_addressed_provider(setup):
    setup.primary.script(Reply(status=429, headers={"retry-after": "2"}, body=RATE))
    assert setup.ask() == "hello from primary"
    assert setup.sent(setup.primary) == 2 and setup.sent(setup.backup) == 0
    assert "429 (retry 2s) → waited 2.0s → primary" in setup.proxy.log_line("waited")


def test_a_one_off_500_is_retried_on_the_same_provider(setup):
    setup.primary.script(Reply(status=500, body={"error": {"message": "boom"}}))
    assert setup.ask() == "hello from primary"
    assert setup.sent(setup.primary) == 2 and setup.sent(setup.backup) == 0
    assert "500 → retried → primary" in setup.proxy.log_line("retried")


def test_a_reset_before_the_head_is_retried_on_the_same_provider(setup):
    setup.primary.script(Reply(drop=True))
    assert setup.ask() == "hello from primary"
    assert setup.sent(setup.backup) == 0


def test_one_models_429_leaves_the_keys_other_models_alone(setup):
    setup.primary.script(Reply(status=429, headers={"retry-after": "30"}, body=RATE))
    assert setup.ask("model-a") == "hello from backup"
    assert setup.ask("model-b") == "hello from primary"
    assert setup.ask("model-a") == "hello from backup"  # still cooling for model-a only
    assert setup.sent(setup.primary) == 2


def test_a_provider_that_recovers_is_probed_and_used_again(setup):
    boom = Reply(status=500, body={"error": {"message": "down"}})
    setup.primary.script(boom, boom)  # retried once, then cooling on our backoff (60 s)
    assert setup.ask() == "hello from backup"
    assert setup.ask() == "hello from backup"  # cooling: skipped without a request
    assert setup.sent(setup.primary) == 2
    time.sleep(PROBE + 0.2)  # past the probe time; its cooldown has 58 s to go
    assert setup.ask() == "hello from primary"  # a probe: healed, and cleared at once
    assert "(probe)" in setup.proxy.log_line("(probe)")
    assert setup.ask() == "hello from primary"


def test_a_prompt_too_long_goes_to_the_larger_context_model(setup):
    setup.primary.script(Reply(status=400, body=TOO_LONG))
    assert setup.ask() == "hello from bigger"
    assert setup.bigger.seen[-1].body["model"] == "gpt-4.1"
    assert setup.sent(setup.primary) == 1 and setup.sent(setup.backup) == 0
    assert "context too long → bigger/gpt-4.1" in setup.proxy.log_line("context too long")


PAGE = b"<!doctype html><html><body><h1>Sign in</h1></body></html>"


def test_a_200_html_page_is_a_failed_attempt(setup):
    page = Reply(status=200, raw=[PAGE], content_type="text/html")
    setup.primary.script(page, page)
    assert setup.ask() == "hello from backup"
    assert setup.sent(setup.primary) == 2  # retried once, as transient


def test_a_redirect_is_a_failed_attempt(setup):
    moved = Reply(status=302, headers={"location": "https://login.invalid/"}, body=PAGE)
    setup.primary.script(moved)
    assert setup.ask() == "hello from primary"  # retried once: it served


def test_a_page_reaches_the_client_only_when_every_candidate_gave_one(shared):
    setup = Setup(shared, "chat")
    page = Reply(status=200, raw=[PAGE], content_type="text/html")
    setup.primary.script(page, page)
    setup.backup.script(page)
    with setup.proxy.http_client(timeout=30) as http:
        answer = http.post(setup.primary.base_url + "/chat/completions",
                           headers={"authorization": "Bearer sk-client"},
                           json={"model": "gpt-4o", "messages": [{"role": "user",
                                                                  "content": "hi"}]})
    assert answer.status_code == 200 and answer.content == PAGE
    assert answer.headers["content-type"] == "text/html"
