"""Reasoning only its producer can read: how Switchback knows a reasoning item
again, and what a candidate may be handed of a client's input.

Stateless agents (Codex CLI: `store: false`, `include:
["reasoning.encrypted_content"]`) send the whole conversation every turn,
earlier reasoning items included, sealed (`encrypted_content`) by the
account that made them. Another account refuses them. Switchback remembers
who produced each sealed item it carried, by a digest of its sealed content
(ids are not unique across accounts), and leaves out what another
candidate could not read. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REASONING = "reasoning"


def mark(item: Any) -> str | None:
    """A sealed reasoning item's mark: a short digest of its sealed content;
    None for anything else."""
    if not isinstance(item, dict) or item.get("type") != REASONING:
        return None
    sealed = item.get("encrypted_content")
    if not isinstance(sealed, str) or not sealed:
        return None
    return hashlib.sha256(sealed.encode()).hexdigest()[:32]


def marks(items: Iterable[Any]) -> list[str]:
    """The marks of the sealed reasoning items among `items` (an answer's output)."""
    return [found for item in items if (found := mark(item)) is not None]


@dataclass(frozen=True)
class Sifted:
    """A request's input as one candidate may get it."""

    body: dict[str, Any]
    left_out: int  # sealed items produced elsewhere
    unknown: int  # sealed items whose producer Switchback does not know (sent as they are)
    also: str = ""  # what else leaving them out changed in the request, for the trail


def sift_items(items: list[Any], producers: Mapping[str, str], to: str, keep_unknown: bool,
               mark_of: Callable[[Any], str | None]) -> tuple[list[Any], int, int]:
    """`items` for candidate `to`, with how many were left out and how many
    of unknown producer kept: a sealed item (one `mark_of` marks) another
    candidate produced is left out; one whose producer is not known goes as
    sent (`keep_unknown`), or is left out too (after a refusal)."""
    kept: list[Any] = []
    left_out = unknown = 0
    for item in items:
        found = mark_of(item)
        producer = producers.get(found) if found is not None else None
        if found is None or producer == to:
            kept.append(item)
        elif producer is None and keep_unknown:
            unknown += 1
            kept.append(item)
        else:
            left_out += 1
    return kept, left_out, unknown


def sift(body: Mapping[str, Any], producers: Mapping[str, str], to: str,
         keep_unknown: bool = True) -> Sifted:
    """`body` for candidate `to`: its `input` sifted (`sift_items`).
    `producers` maps the marks Switchback knows to their producers."""
    items = body.get("input")
    if not isinstance(items, list):
        return Sifted(dict(body), 0, 0)
    kept, left_out, unknown = sift_items(items, producers, to, keep_unknown, mark)
    if not left_out:
        return Sifted(dict(body), 0, unknown)
    return Sifted({**body, "input": kept}, left_out, unknown)


def sealed_marks(body: Mapping[str, Any]) -> list[str]:
    """The marks of the sealed items a request carries, to look their producers up."""
    items = body.get("input")
    return marks(items) if isinstance(items, list) else []


def refused_as_unreadable(text: str) -> bool:
    """An error's words saying sealed reasoning was not this account's: OpenAI's
    "The encrypted content for item rs_… could not be verified", and the
    same refusal as other providers word it."""
    lowered = text.lower()
    return ("encrypted content" in lowered or "encrypted_content" in lowered) and any(
        word in lowered for word in ("could not be verified", "invalid", "cannot be decrypted",
                                     "could not be decrypted"))



def session_name(body: Mapping[str, Any]) -> str | None:
    """The session a call names (`prompt_cache_key`, as Codex sends its session
    id, in either protocol), or None."""
    name = body.get("prompt_cache_key")
    return name if isinstance(name, str) and name else None


def reasoning_items(body: Mapping[str, Any]) -> int:
    """How many reasoning items a Responses request's input carries."""
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(1 for item in items if isinstance(item, dict) and item.get("type") == REASONING)


def answer_marks(response: Any) -> list[str]:
    """The marks of the sealed reasoning a Responses answer produced."""
    output = response.get("output") if isinstance(response, dict) else None
    return marks(output if isinstance(output, list) else [])


@dataclass(frozen=True)
class Seals:
    """A protocol's content that only the account which produced it can read
    (sealed reasoning, signed thinking): how it is found and left out."""

    marks: Callable[[Mapping[str, Any]], list[str]]  # in a request, to look producers up
    sift: Callable[[Mapping[str, Any], Mapping[str, str], str, bool], Sifted]
    produced: Callable[[Any], list[str]]  # in a whole answer (or a stream's `final`)
    count: Callable[[Mapping[str, Any]], int]  # in a request, dropped when translated
    refused: Callable[[str], bool]  # an error's words: sealed content not this account's
    noun: str  # what the trail calls one


RESPONSES_SEALS = Seals(sealed_marks, sift, answer_marks, reasoning_items, refused_as_unreadable,
                        "reasoning item")

