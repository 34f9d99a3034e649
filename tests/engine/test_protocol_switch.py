"""The protocol switch on a missing endpoint, between the three protocols:
a Messages call on a provider without `/messages` is tried on its chat
endpoint, the answer translated back, and the switch remembered; a count of
tokens is never switched. (Chat ⇄ Responses: tests/engine/test_dispatch.py.)
"""

from __future__ import annotations

import asyncio
import json

from support.engine import Clock, ScriptedReply, ScriptedTransport, wire
from support.fakeprovider import chat_completion
from switchback.engine.results import Answer
from switchback.recognise import recognise
from switchback.vocabulary import Protocol

NOT_FOUND = json.dumps({"type": "error", "error": {"type": "not_found_error",
                                                   "message": "Not Found"}}).encode()
CONFIG = "providers:\n  anthropic: {base_url: https://api.anthropic.com/v1, keys: [sk-ant-one]}\n"


def test_a_messages_provider_without_its_endpoint_is_served_on_chat_and_remembered():
    transport = ScriptedTransport(
        ScriptedReply(404, [NOT_FOUND], "application/json"),
        ScriptedReply(200, [json.dumps(chat_completion("claude-x", "hi there")).encode()],
                      "application/json"),
        ScriptedReply(200, [json.dumps(chat_completion("claude-x", "again")).encode()],
                      "application/json"))
    dispatcher = wire(CONFIG, Clock(), transport)
    body = json.dumps({"model": "claude-x", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    call = recognise("POST", "https://api.anthropic.com/v1/messages", [], body, dispatcher.table)
    assert call is not None and call.protocol is Protocol.MESSAGES

    async def go() -> None:
        first = await dispatcher.run(call)
        assert isinstance(first.delivery, Answer) and first.delivery.status == 200
        answer = json.loads(first.delivery.body)
        assert answer["type"] == "message" and answer["content"] == [
            {"type": "text", "text": "hi there"}]
        assert answer["stop_reason"] == "end_turn"
        assert str(first.trail) == "anthropic 404 (switch to chat) → anthropic[chat] 200"
        second = await dispatcher.run(call)
        assert json.loads(second.delivery.body)["content"][0]["text"] == "again"
        assert str(second.trail) == "anthropic[chat] 200"
    asyncio.run(go())
    assert [url for url, _, _ in transport.sent] == [
        "https://api.anthropic.com/v1/messages",
        "https://api.anthropic.com/v1/chat/completions",
        "https://api.anthropic.com/v1/chat/completions"]
    # The key travels as chat wants it there.
    assert ("authorization", "Bearer sk-ant-one") in transport.sent[1][1]
