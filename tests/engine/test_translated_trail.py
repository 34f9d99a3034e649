"""What a translation has no form for is named in the trail — a whole answer
and a stream alike: a Messages answer's thinking signature reaching a chat
client, say."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.engine import Clock, ScriptedReply, ScriptedTransport, wire
from support.fakemessages import message_events, message_object, signed_for
from support.fakeprovider import sse_bytes
from switchback.engine.delivery import Committed
from switchback.recognise import recognise

CONFIG = """
providers:
  primary: {base_url: "https://primary.example/v1", keys: [sk-one]}
  claude: {base_url: "https://claude.example/v1", protocol: messages, keys: [sk-ant-one]}
fallbacks: {"*": [claude/*]}
"""
LIMITED = ScriptedReply(429, [b'{"error": {"message": "slow down"}}'], "application/json",
                        **{"retry-after": "20"})


@pytest.mark.parametrize("stream", [False, True])
def test_a_thinking_signature_a_chat_client_cannot_have_is_named(stream: bool) -> None:
    thinking = signed_for("sk-ant-one")
    reply = ScriptedReply(200, [sse_bytes(message_events("m", "hi", thinking))]) if stream \
        else ScriptedReply(200, [json.dumps(message_object("m", "hi", thinking)).encode()],
                           "application/json")
    dispatcher = wire(CONFIG, Clock(), ScriptedTransport(LIMITED, reply))
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    call = recognise("POST", "https://primary.example/v1/chat/completions", [],
                     json.dumps(body).encode(), dispatcher.table)

    async def go() -> str:
        result = await dispatcher.run(call)
        if isinstance(result.delivery, Committed):
            got = result.delivery.first + b"".join([c async for c in result.delivery.rest])
            await result.delivery.aclose()
            assert b'"reasoning_content"' in got and b"hi" in got
        return str(result.trail)
    trail = asyncio.run(go())
    assert "claude[messages] 200" in trail and "dropped thinking signature" in trail, trail
