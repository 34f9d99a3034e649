"""JSON from strangers: parse, or None — never an exception.

Clients and providers send what they like: bad syntax, bad UTF-8, or JSON
nested deeper than Python's recursion limit (which `json.loads` answers with
RecursionError, not ValueError). Every parse of outside bytes goes here.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes | bytearray) -> Any | None:
    """The parsed value, or None when `data` is not JSON we can read."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
