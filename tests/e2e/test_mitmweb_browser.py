"""mitmweb as a person sees it, in a real headless Chromium: `switchback run
--web` after real calls through the openai SDK, then the page — the flow
list's columns, marks and comments, the attempts grouped with their call by
a filter, the LLM view of streamed and translated answers, an attempt's 429.

Debian's chromium, driven by playwright's own driver (no downloaded
browser). Screenshots go to test-artifacts/mitmweb/ (not committed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import pytest
from mitmproxy.version import VERSION
from playwright.sync_api import Page, expect, sync_playwright

from support.fakemessages import MESSAGES as FAKE_MESSAGES
from support.fakeprovider import CHAT, LIMITED, PAIR, Reply
from support.proxy import BIN, GUARD, Proxy, ROOT, free_port, stop, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "mitmweb"
TOKEN = "switchback-browser-test"
NEW_WEB = int(VERSION.split(".")[0]) >= 12  # mitmweb 12 asks for a token
WAIT_MS = 15_000  # the longest any expectation waits for the page
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


@contextmanager
def switchback_web(tmp_path: Path, confdir: Path, upstream_ca: Path, config: str
                   ) -> Iterator[tuple[Proxy, int]]:
    """`switchback run --web` as a user starts it, plus the test's loopback guard."""
    (tmp_path / "switchback.yaml").write_text(config)
    port, web_port = free_port(), free_port()
    command = [str(BIN / "switchback"), "run", "--web", "--config",
               str(tmp_path / "switchback.yaml"), "--listen", f"127.0.0.1:{port}",
               "--certs", str(confdir), "--", "-s", str(GUARD),
               "--set", f"web_port={web_port}", "--set", "web_open_browser=false",
               "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
               "--set", "switchback_status_port=0",
               *(("--set", f"web_password={TOKEN}") if NEW_WEB else ())]
    log = tmp_path / "mitmweb.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for_port(port, process, log)
        wait_for_port(web_port, process, log)
        yield Proxy(port, confdir / "mitmproxy-ca-cert.pem", log), web_port
    finally:
        stop(process)


@pytest.fixture
def page() -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium (scripts/test " \
                                    "installs it as root: apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def open_flow(page: Page, row, tab: str, showing: str) -> str:
    """Click a row of the list, then a tab of its details; once the view
    shows `showing` (a pattern; views load after the tab), the text shown."""
    row.click()
    detail = page.locator(".flow-detail")
    detail.get_by_text(tab, exact=True).first.click()
    expect(detail).to_contain_text(re.compile(showing))
    return detail.inner_text().replace("\xa0", " ")


def test_mitmweb_shows_calls_attempts_and_answers_as_a_person_reads_them(
        fakes, tmp_path, confdir, server_cert, page):
    primary, backup = fakes("primary"), fakes("backup", paths=(CHAT,))
    with switchback_web(tmp_path, confdir, server_cert.ca, PAIR.format(
            primary=primary.base_url, backup=backup.base_url)) as (proxy, web_port):
        client = proxy.openai(primary.base_url)
        client.chat.completions.create(model="m", messages=MESSAGES)
        list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
        list(client.responses.create(model="m", input="hi", instructions="Be brief.",
                                     stream=True))
        primary.script(LIMITED)  # then 404 on backup's /responses: translated to chat
        list(client.responses.create(model="m", input="hi again", stream=True))

        page.goto(f"http://127.0.0.1:{web_port}/" + (f"?token={TOKEN}" if NEW_WEB else ""))
        # The list: one row per call and per attempt, in the columns Switchback asks for.
        rows = page.locator(".flow-table tbody tr.has-request")
        expect(rows).to_have_count(10)
        headers = [h.strip() for h in page.locator(".flow-table thead th").all_inner_texts()]
        assert [h for h in headers if h] == ["Path", "Method", "Status", "Size", "Time",
                                             "Comment"]
        comments = page.locator(".flow-table tbody tr.has-request td.col-comment")
        expect(comments.nth(6)).to_contain_text("· call ")  # the last call has ended
        texts = comments.all_inner_texts()
        calls = [n for n, text in enumerate(texts) if not text.startswith("↪")]
        assert calls == [0, 2, 4, 6]  # each call, its attempts right under it
        translated = texts[6]
        name = translated.rsplit("call ", 1)[1]
        assert translated == ("🔀🔄 primary 429 (retry 20s) → backup 404 (switch to chat) → "
                              f"backup[chat] 200 · 3 attempts · 5 in, 3 out tokens, unpriced · "
                              f"call {name}")
        assert texts[7:] == [f"↪ primary 429 (retry 20s) · attempt 1/3 of call {name}",
                             f"↪ backup 404 (switch to chat) · attempt 2/3 of call {name}",
                             f"↪ backup[chat] 200 · attempt 3/3 of call {name}"]
        marks = page.locator(".flow-table tbody tr.has-request .marker").all_inner_texts()
        assert marks == ["", "↪", "", "↪", "", "↪", "🔀", "↪", "↪", "↪"]
        statuses = [s.strip() for s in page.locator(
            ".flow-table tbody tr.has-request td.col-status").all_inner_texts()]
        assert statuses[6:] == ["200", "429", "404", "200"]
        shot(page, "list")

        # The LLM view, chosen by itself: a streamed chat answer assembled ...
        shown = open_flow(page, rows.nth(2), "Response", "assembled from")
        assert "answer (assembled from" in shown and "hello from primary" in shown
        assert "data: {" not in shown
        # ... a streamed Responses answer ...
        shown = open_flow(page, rows.nth(4), "Response", "completed")
        assert "hello from primary" in shown and "── finish ──\ncompleted" in shown
        # ... and a translated one, with who served it, how, and the trail.
        shown = open_flow(page, rows.nth(6), "Response", "hello from backup")
        assert "hello from backup" in shown and "answer (assembled from" in shown
        assert re.search(r"protocol\s+responses → chat \(translated\)", shown)
        assert re.search(r"provider\s+backup", shown)
        assert re.search(r"tokens\s+5 input, 0 cached, 3 output, 0 reasoning", shown)
        assert "→ backup[chat] 200" in shown
        shot(page, "llm-view")
        shown = open_flow(page, rows.nth(6), "Request", "hi again")
        assert "── user ──\nhi again" in shown

        # The attempt that got the 429: its status, reason and the provider's body.
        shown = open_flow(page, rows.nth(7), "Response", "Rate limit reached")
        assert "429 Too Many Requests" in shown
        assert "Rate limit reached (rate_limit_exceeded)" in shown
        shot(page, "attempt-429")
        # The attempt that served: the provider's own chat stream, as it sent it.
        shown = open_flow(page, rows.nth(9), "Response", "3/3 of call")
        assert "hello from backup" in shown and "── finish ──\nstop" in shown
        assert "content-length" not in shown.lower()
        shown = open_flow(page, rows.nth(9), "Request", r"protocol\s+chat")
        assert "protocol  chat" in shown and "── user ──\nhi again" in shown
        # The raw view stays one click away.
        page.locator(".flow-detail").get_by_text("Response", exact=True).first.click()
        page.locator(".flow-detail").get_by_text(re.compile(r"View:")).first.click()
        page.get_by_text(re.compile(r"^raw$", re.IGNORECASE)).last.click()
        expect(page.locator(".flow-detail")).to_contain_text('"chat.completion.chunk"')
        shot(page, "attempt-raw-stream")

        # A call and its attempts, and nothing else, by the name in their comments.
        page.get_by_text("Flow List", exact=True).click()
        page.get_by_placeholder("Search").fill(f"~comment {name}")
        expect(rows).to_have_count(4)
        shot(page, "filtered")

        flows_text = page.locator(".flow-table").inner_text()
        assert "sk-client-key" not in flows_text and "sk-backup-literal" not in flows_text


def test_mitmweb_shows_a_claude_call_rescued_mid_answer(fakes, tmp_path, confdir, server_cert,
                                                        page):
    """A Messages stream cut on key 1 and carried on by key 2, as a person
    sees it: one call with the trail of its rescue, its two attempts under
    it, and the answer assembled whole in the LLM view."""
    claude = fakes("anthropic", paths=(FAKE_MESSAGES,))
    claude.script(Reply(cut_after=5))  # its first words, then the connection drops
    config = (f'providers:\n  anthropic: {{base_url: "{claude.base_url}", protocol: messages, '
              'keys: [sk-ant-api03-one, sk-ant-api03-two]}\n')
    with switchback_web(tmp_path, confdir, server_cert.ca, config) as (proxy, web_port):
        client = anthropic.Anthropic(base_url=claude.base_url.removesuffix("/v1"),
                                     api_key="sk-ant-own", max_retries=0,
                                     http_client=proxy.http_client(timeout=30))
        with client.messages.stream(model="claude-x", max_tokens=64,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            assert stream.get_final_message().content[0].text == "hello from anthropic"

        page.goto(f"http://127.0.0.1:{web_port}/" + (f"?token={TOKEN}" if NEW_WEB else ""))
        rows = page.locator(".flow-table tbody tr.has-request")
        expect(rows).to_have_count(3)
        comments = page.locator(".flow-table tbody tr.has-request td.col-comment")
        expect(comments.first).to_contain_text("· call ")
        texts = comments.all_inner_texts()
        assert re.match(r"🩹 anthropic#\w+ cut after 5 chunks → anthropic#\w+ continued "
                        r"\(prefill, \d+ chunks\) · 2 attempts · ", texts[0]), texts[0]
        marks = page.locator(".flow-table tbody tr.has-request .marker").all_inner_texts()
        assert marks == ["🩹", "↪", "↪"]  # the call, marked rescued; its attempts
        assert [t.split(" · ")[0][:2] for t in texts[1:]] == ["↪ ", "↪ "]
        shown = open_flow(page, rows.nth(0), "Response", "hello from anthropic")
        assert "answer (assembled from" in shown and "hello from anthropic" in shown
        assert re.search(r"protocol\s+messages", shown)
        assert "event: content_block_delta" not in shown
        shot(page, "rescued-claude-call")
