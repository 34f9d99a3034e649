"""Responses conversations as items: what a `previous_response_id` stands for.

A provider keeps a conversation behind each response id, but only for the
account that made it. To continue one elsewhere — on another key, another
provider, or a chat endpoint — Switchback replays it: the recorded items go
in as input and the id goes away. Each item remembers who produced it, since
reasoning can only be read by the account that wrote it. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..jsonsafe import loads

Items = tuple[tuple[str, dict], ...]  # (producer, item); "" for what the client sent


@dataclass(frozen=True)
class Turn:
    """The conversation up to and including one response."""

    items: Items
    by: str  # who produced the response: a provider name and key fingerprint
    caller: str = ""  # whose conversation it is: the client's credential fingerprint

    def dumps(self) -> str:
        return json.dumps({"by": self.by, "caller": self.caller,
                           "items": [list(pair) for pair in self.items]},
                          separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Turn | None:
        data = loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            return None
        items = tuple((str(owner), item) for owner, item in
                      (pair for pair in data["items"] if isinstance(pair, list) and len(pair) == 2)
                      if isinstance(item, dict))
        return cls(items, str(data.get("by") or ""), str(data.get("caller") or ""))


def input_items(value: Any) -> list[dict]:
    """A request's `input` as items: a string is one user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def carried(owner: str, item: dict, to: str) -> dict | None:
    """An item as candidate `to` may be handed it. Reasoning stays with the
    account that produced it (encrypted, or stored there under its id); other
    items produced elsewhere lose their id, which only that account knows."""
    if not owner or owner == to:
        return item
    if item.get("type") == "reasoning":
        return None
    return {k: v for k, v in item.items() if k != "id"}


def replay(request: dict, history: Items, to: str) -> tuple[dict, int]:
    """`request` with `history` as input in place of its previous_response_id,
    for the candidate `to`; and how many reasoning items produced elsewhere
    had to be left out (another account cannot read them and would refuse)."""
    kept = [item for owner, original in history
            if (item := carried(owner, original, to)) is not None]
    body = {k: v for k, v in request.items() if k != "previous_response_id"}
    body["input"] = kept + input_items(request.get("input"))
    return body, len(history) - len(kept)


def extend(earlier: Sequence[tuple[str, dict]], request: dict, output: Sequence[dict],
           by: str, caller: str = "") -> Turn:
    """The conversation after one more turn: what came before, the client's
    input, and the answer's output items."""
    items = (*earlier, *(("", item) for item in input_items(request.get("input"))),
             *((by, item) for item in output if isinstance(item, dict)))
    return Turn(tuple(items), by, caller)


def answered(response: Any) -> tuple[str, list[dict]] | None:
    """(id, output items) of a Responses answer object, if it is one."""
    if not isinstance(response, dict) or not isinstance(response.get("id"), str):
        return None
    output = response.get("output")
    return response["id"], [item for item in output if isinstance(item, dict)] \
        if isinstance(output, list) else []
