"""The real Claude Code through Switchback, both ways — through the proxy
(trusting its CA) and through the gateway (no CA) — against a loopback
Messages fake with two keys: the first answers 429 with a 30 s hint, which
Claude Code alone would wait out; Switchback answers from the second key,
and Claude Code prints the answer having made one call.

Claude Code (`@anthropic-ai/claude-code`, a native binary from npm) is
installed once per session; `scripts/test` makes sure npm is there. Its
non-essential traffic is switched off, and the test's loopback guard sits
in the mitmdump it talks through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fakemessages import MESSAGES, RATE_LIMITED, message_events
from support.fakeprovider import Reply
from support.proxy import free_port, running_proxy, wait_for_port

ANSWER = "Hello from the loopback fake, through Switchback."
K1, K2 = "sk-ant-api03-claude-code-one", "sk-ant-api03-claude-code-two"
CONFIG = """
providers:
  anthropic: {{base_url: "{url}", protocol: messages, keys: [{k1}, {k2}]}}
cooldown: {{max_wait: 0s}}
"""


@pytest.fixture(scope="session")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `claude` binary, installed from npm for this session."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to install Claude Code (scripts/test installs it)"
    folder = tmp_path_factory.mktemp("claude-code")
    subprocess.run([npm, "install", "--silent", "--no-fund", "--no-audit", "--prefix",
                    str(folder), "@anthropic-ai/claude-code"], check=True, timeout=600,
                   stdin=subprocess.DEVNULL)
    binary = folder / "node_modules" / ".bin" / "claude"
    assert binary.exists(), f"no claude binary in {folder}"
    return binary


@pytest.fixture
def anthropic_fake(fakes):
    """A Messages fake: 429 (30 s hint) on the first call, then the answer."""
    fake = fakes("anthropic", paths=(MESSAGES,),
                 default=Reply(events=message_events("claude-sonnet-4-5", ANSWER)))
    fake.script(Reply(status=429, headers={"retry-after": "30"}, body=RATE_LIMITED))
    return fake


def quiet_env(home: Path) -> dict[str, str]:
    """Claude Code's environment: a config of its own, nothing non-essential."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM")}
    return {**keep, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0", "ANTHROPIC_API_KEY": "sk-ant-api03-the-users-own"}


def ask(claude: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(claude), "-p", "Say hello.", "--model", "claude-sonnet-4-5"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def check(done: subprocess.CompletedProcess, fake, log_line: str) -> None:
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert ANSWER in done.stdout
    calls = [s for s in fake.seen if s.path.endswith(MESSAGES)]
    assert [s.headers.get("x-api-key") for s in calls] == [K1, K2]  # one call, two keys
    sent = calls[-1]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["stream"] is True and sent.body["tools"]  # Claude Code's own call
    assert "anthropic#" in log_line and "429 (retry 30s)" in log_line, log_line


def test_claude_code_through_the_proxy_is_served_by_the_second_key(
        claude, anthropic_fake, tmp_path, confdir, server_cert):
    config = CONFIG.format(url=anthropic_fake.base_url, k1=K1, k2=K2)
    with running_proxy(tmp_path, confdir, server_cert.ca, config) as proxy:
        env = {**quiet_env(tmp_path), "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
               "NODE_EXTRA_CA_CERTS": str(proxy.ca),
               "ANTHROPIC_BASE_URL": anthropic_fake.base_url.removesuffix("/v1")}
        done = ask(claude, env, tmp_path)
        check(done, anthropic_fake, proxy.log_line("messages claude-sonnet-4-5 stream"))


def test_claude_code_through_the_gateway_needs_no_ca(
        claude, anthropic_fake, tmp_path, confdir, server_cert):
    config = CONFIG.format(url=anthropic_fake.base_url, k1=K1, k2=K2)
    gateway = free_port()
    with running_proxy(tmp_path, confdir, server_cert.ca, config,
                       extra=("--set", f"switchback_gateway={gateway}")) as proxy:
        wait_for_port(gateway, proxy.process, proxy.log)
        env = {**quiet_env(tmp_path), "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{gateway}",
               "NO_PROXY": "127.0.0.1,localhost"}
        done = ask(claude, env, tmp_path)
        check(done, anthropic_fake, proxy.log_line("messages claude-sonnet-4-5 stream"))
    assert "NODE_EXTRA_CA_CERTS" not in env and json.dumps(env).count("HTTPS_PROXY") == 0
