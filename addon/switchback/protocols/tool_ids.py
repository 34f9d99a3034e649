"""Tool-call ids between the Messages API and OpenAI's protocols, without state.

Each side checks the ids in a conversation's history against the ones it
issued, and Anthropic accepts only `[A-Za-z0-9_-]+`. So a call id crosses
over in the other side's shape and comes back, a turn later, exactly as it
was issued — computed both ways from the id alone, no table kept:

- `toolu_S` ⇄ `call_S` for a plain suffix S (`[A-Za-z0-9_-]+`): the usual
  case, ids of both providers read naturally on the other side.
- Any other OpenAI id (`functions.get_weather:0`, a UUID, "") becomes
  `toolu_sbo-` + its UTF-8 in unpadded base64url, and decodes back.
- Any other Messages id (`srvtoolu_…`, one a client made up) becomes
  `call_sbm-` + the same encoding of it, and decodes back.

A suffix starting with one of the two tags is never plain, so every id has
exactly one image and `to_openai_id(to_messages_id(x)) == x` for every
string x (and the other way round). Pure.
"""

from __future__ import annotations

import base64
import binascii
import re

MESSAGES_PREFIX = "toolu_"
OPENAI_PREFIX = "call_"
_FROM_OPENAI = "sbo-"  # a Messages id carrying an OpenAI id that was not call_-shaped
_FROM_MESSAGES = "sbm-"  # an OpenAI id carrying a Messages id that was not toolu_-shaped
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def _plain_suffix(value: str, prefix: str) -> str | None:
    """The suffix after `prefix` when it maps straight across, else None."""
    if not value.startswith(prefix):
        return None
    suffix = value[len(prefix):]
    if not _PLAIN.fullmatch(suffix) or suffix.startswith((_FROM_OPENAI, _FROM_MESSAGES)):
        return None
    return suffix


def _encode(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def _decode(text: str) -> str | None:
    """The string `_encode` made `text` from; None when it made none."""
    try:
        value = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode(
            "utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return None
    return value if _encode(value) == text else None  # only the canonical spelling


def to_messages_id(openai_id: str) -> str:
    """An OpenAI tool-call id (chat `tool_calls[].id`, Responses `call_id`)
    as the `toolu_…` id a Messages client sees."""
    if (suffix := _plain_suffix(openai_id, OPENAI_PREFIX)) is not None:
        return MESSAGES_PREFIX + suffix
    carried = _carried(openai_id, OPENAI_PREFIX + _FROM_MESSAGES)
    if carried is not None and to_openai_id(carried) == openai_id:  # (shorter each time)
        return carried
    return MESSAGES_PREFIX + _FROM_OPENAI + _encode(openai_id)


def to_openai_id(messages_id: str) -> str:
    """A Messages `tool_use` id as the `call_…` id an OpenAI client or
    provider sees; the inverse of `to_messages_id`."""
    if (suffix := _plain_suffix(messages_id, MESSAGES_PREFIX)) is not None:
        return OPENAI_PREFIX + suffix
    carried = _carried(messages_id, MESSAGES_PREFIX + _FROM_OPENAI)
    if carried is not None and to_messages_id(carried) == messages_id:
        return carried
    return OPENAI_PREFIX + _FROM_MESSAGES + _encode(messages_id)


def _carried(value: str, tag: str) -> str | None:
    """The id encoded after `tag`, when `value` is such a carrier."""
    return _decode(value[len(tag):]) if value.startswith(tag) else None
