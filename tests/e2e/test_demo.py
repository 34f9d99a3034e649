"""The offline demo runs to completion and says what happened to each call."""

from __future__ import annotations

import re
import subprocess
import sys

from support.proxy import ROOT


def test_demo_runs_and_reports_switches_and_failovers():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")],
                          capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    calls = re.split(r"\n(?=\d\. )", done.stdout)[1:]
    assert len(calls) == 4
    chat, responses, responses_stream, chat_stream = calls
    for call in calls:
        assert "client got" in call and "hello from chatonly" in call
        assert "FAILED OVER" in call
    assert "SWITCHED PROTOCOL" in responses and "SWITCHED PROTOCOL" in responses_stream
    assert "SWITCHED PROTOCOL" not in chat and "SWITCHED PROTOCOL" not in chat_stream
    assert "ratelimited 429 (retry 30s) → down refused" in chat
    assert "ratelimited cooling" in responses
    assert "sk-demo" not in done.stdout
