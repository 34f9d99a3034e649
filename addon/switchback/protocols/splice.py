"""Continue a client's stream with another attempt's answer: the rescue's splice.

A committed stream that broke left its client with part of an answer — some
text, reasoning, tool calls. A rescue asks another candidate for the rest,
shapes that attempt's stream into the client's protocol as usual, and a
`Splice` makes those events continue the client's stream: the ids, output
indexes and sequence numbers the client already has, and nothing it has
already had.

- After a prefill (the delivered text sent back as the answer's start) the
  new attempt writes only the rest of the text: appended. Its reasoning is
  left out; the client's is behind it.
- After a restart (the original request again) the new answer must begin
  with exactly what was delivered, part by part: what it repeats is dropped,
  the rest goes on; the first difference is `Diverged`.

A splice works on the client's protocol, whatever the attempts spoke
upstream, so one per client protocol serves every pair of protocols. It
learns the client's state from the bytes the client got (`catch_up`), and
keeps it up to date with every event it lets through. Pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..vocabulary import Rescue
from .kinds import RESPONSES_END, RESPONSES_PREAMBLE, RESPONSES_TERMINAL, is_done
from .shapers import StreamShaper, chat_error
from .sse import Event, SseParser, encode
from .usage import Usage


class Diverged(ValueError):
    """A restarted answer that does not begin with what the client already has."""


class Kind(enum.Enum):
    """What one part of an answer is; a restart must repeat each in order."""

    TEXT = "text"
    REFUSAL = "refusal"
    REASONING = "reasoning"
    TOOL = "tool call"
    OTHER = "item"  # a built-in tool's item: nothing to compare but its type


@dataclass(eq=False)
class Part:
    """One part of the answer as the client has it."""

    kind: Kind
    text: str = ""  # the text, or a tool call's arguments
    name: str = ""  # a tool call's
    done: bool = False


@dataclass(eq=False)
class Progress:
    """A continuation's part laid over one of the client's: how much of the
    client's text it has repeated so far."""

    part: Part
    matched: int = 0
    # After a prefill: the new text's start, held while it may be the client's
    # text all over again (a provider that answered the prefill as a finished
    # turn and started afresh); None once that is settled.
    held: str | None = None
    tail: str = ""  # the whitespace the prefill left off the client's text (not sent)

    def take(self, delta: str, last: bool) -> str:
        """What of `delta` the client does not have yet. `last`: the part is
        the client's latest, the only one that may still grow."""
        text = self.part.text
        if self.held is not None:
            held = self.held + delta
            if len(held) < len(text) and text.startswith(held):
                self.held = held
                return ""
            self.held = None
            # Started afresh: what it repeats is dropped; else all of it goes
            # on, but for the whitespace the client already has.
            delta = held[len(text):] if held.startswith(text) else \
                held[len(self.tail):] if self.tail and held.startswith(self.tail) else held
            if not delta:
                return ""
        elif self.matched < len(text):
            want = text[self.matched:self.matched + len(delta)]
            if not delta.startswith(want):
                raise Diverged(f"the new answer's {self.part.kind.value} differs from "
                               "the delivered one")
            self.matched += len(want)
            delta = delta[len(want):]
            if not delta:
                return ""
        if not last or self.part.done:
            raise Diverged(f"the new answer goes on with a {self.part.kind.value} "
                           "the client had whole")
        self.matched += len(delta)
        return delta

    def check_whole(self) -> None:
        if self.held:
            raise Diverged("the new answer repeats only the start of the delivered text")
        if self.matched < len(self.part.text):
            raise Diverged(f"the new answer's {self.part.kind.value} stops short of "
                           "the delivered one")


@dataclass
class Splice:
    """What a client has of one answer, and how another attempt continues it.
    One per client protocol: `ChatSplice`, `ResponsesSplice`."""

    parts: list[Part] = field(default_factory=list)  # in the order they began
    events: int = 0  # events with data the client got
    complete: bool = False  # the client had the answer's end
    mode: Rescue | None = None  # of the continuation being spliced
    extra: Usage = field(default_factory=Usage)  # the earlier attempts': added to the usage
    begun: list[Part] = field(default_factory=list)  # the client's parts when it began
    laid: dict[int, Progress] = field(default_factory=dict)  # begun part's id → its progress
    continued: int = 0  # events the continuation gave the client
    tail: str = ""  # whitespace a prefill left off the client's text

    def catch_up(self, delivered: bytes) -> None:
        """Learn the client's state from the bytes it got."""
        parser = SseParser()
        for event in [*parser.feed(delivered), *_tail(parser)]:
            payload = event.json()
            if isinstance(payload, dict):
                self.record(event.name, payload)

    def blocker(self) -> str | None:
        """Why this answer cannot be continued; None when it can."""
        return "the answer had completed" if self.complete else None

    def prefill(self) -> str | None:
        """The text to send back as the answer's start; None when prefill
        cannot continue this answer (its last part is not text, or a tool
        call was delivered)."""
        if any(p.kind is Kind.TOOL for p in self.parts) or not self.parts \
                or self.parts[-1].kind is not Kind.TEXT or not self.parts[-1].text:
            return None
        return self.parts[-1].text

    def begin(self, mode: Rescue, extra: Usage, tail: str = "") -> None:
        """A continuation starts; `extra` is what the attempts before it used,
        `tail` the whitespace a prefill left off the end of the client's text."""
        self.mode, self.extra, self.continued, self.tail = mode, extra, 0, tail
        self.begun, self.laid = list(self.parts), {}

    def take(self, data: bytes) -> bytes:
        """The client's bytes for a continuation's bytes (whole events, in the
        client's protocol). `Diverged` when a restart's answer differs."""
        out = []
        for event in SseParser().feed(data):
            payload = event.json()
            if not isinstance(payload, dict):
                out.append(event.raw)  # `[DONE]`, comments, pings: as they are
                continue
            emitted = self.splice(event.name, payload)
            if emitted is not None:
                self.continued += 1
                self.record(event.name, emitted)
                out.append(encode(emitted, event.name))
        return b"".join(out)

    def lay(self, part: Part, matched: int) -> Progress:
        progress = self.laid[id(part)] = Progress(part, matched)
        return progress

    def new_part(self, kind: Kind, name: str = "") -> Progress:
        """A part the client does not have: after a restart, only once the
        new answer has repeated every part the client had."""
        if self.mode is Rescue.RESTART:
            self.check_whole()
        part = Part(kind, name=name)
        self.parts.append(part)
        return self.lay(part, 0)

    def check_whole(self) -> None:
        """After a restart: every part the client had is repeated in full."""
        for part in self.begun:
            progress = self.laid.get(id(part))
            if progress is None:
                raise Diverged(f"the new answer lacks the delivered {part.kind.value}")
            progress.check_whole()

    def finished(self) -> None:
        if self.mode is Rescue.RESTART:
            self.check_whole()
        for progress in self.laid.values():
            if progress.held:
                progress.check_whole()

    def continue_(self, part: Part) -> Progress:
        """A prefill's text laid over the client's text it continues."""
        progress = self.lay(part, len(part.text))
        progress.held, progress.tail = "", self.tail
        return progress

    def last(self, part: Part) -> bool:
        return bool(self.parts) and self.parts[-1] is part

    # Per protocol.
    def record(self, name: str | None, payload: dict) -> None:
        raise NotImplementedError

    def splice(self, name: str | None, payload: dict) -> dict | None:
        raise NotImplementedError

    def fail(self, message: str) -> bytes:
        raise NotImplementedError

    @property
    def final(self) -> dict | None:
        return None


def _tail(parser: SseParser) -> list[Event]:
    rest = parser.close()
    return [] if rest is None else SseParser().feed(rest.raw.rstrip(b"\r\n") + b"\n\n")


# ------------------------------------------------------------------ chat

_CHAT_TEXT = {"content": Kind.TEXT, "refusal": Kind.REFUSAL,
              "reasoning_content": Kind.REASONING, "reasoning": Kind.REASONING}
_CHAT_HEAD = ("id", "object", "created", "model", "system_fingerprint")


@dataclass
class ChatSplice(Splice):
    head: dict[str, Any] = field(default_factory=dict)  # the client's chunk id, model, …
    texts: dict[Kind, Part] = field(default_factory=dict)
    fields: dict[Kind, str] = field(default_factory=dict)  # the delta field the client saw
    tools: dict[int, Part] = field(default_factory=dict)  # by the client's tool index
    multiple: bool = False  # n > 1
    # The continuation's parts, as laid over the client's (None: left out).
    own: dict[Any, tuple[Progress | None, int]] = field(default_factory=dict)

    def blocker(self) -> str | None:
        return "several choices (n > 1)" if self.multiple else super().blocker()

    def begin(self, mode: Rescue, extra: Usage, tail: str = "") -> None:
        super().begin(mode, extra, tail)
        self.own = {}

    def record(self, name: str | None, payload: dict) -> None:
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return
        self.events += 1
        if not self.head:
            self.head = {k: payload[k] for k in _CHAT_HEAD if k in payload}
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self.multiple = True
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            for key, kind in _CHAT_TEXT.items():
                value = delta.get(key)
                if isinstance(value, str) and value:
                    self._text_part(kind, key).text += value
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._record_call(call)
            if choice.get("finish_reason"):
                self.complete = True

    def _text_part(self, kind: Kind, key: str) -> Part:
        part = self.texts.get(kind)
        if part is None:
            part = self.texts[kind] = Part(kind)
            self.fields[kind] = key
            self.parts.append(part)
        return part

    def _record_call(self, call: dict) -> None:
        index = call.get("index", 0)
        part = self.tools.get(index)
        if part is None:
            part = self.tools[index] = Part(Kind.TOOL)
            self.parts.append(part)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        if isinstance(function.get("name"), str):
            part.name += function["name"]
        if isinstance(function.get("arguments"), str):
            part.text += function["arguments"]

    def splice(self, name: str | None, payload: dict) -> dict | None:
        if "choices" not in payload:
            return payload  # an error chunk
        choices = []
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            new: dict[str, Any] = {}
            for key, kind in _CHAT_TEXT.items():
                value = delta.get(key)
                if isinstance(value, str) and value:
                    text = self._text(kind, key, value)
                    if text:
                        new[self.fields.get(kind, key)] = text
            calls = [c for c in map(self._call, delta.get("tool_calls") or ()) if c]
            if calls:
                new["tool_calls"] = calls
            finish = choice.get("finish_reason")
            if finish:
                self.finished()
            if new or finish:
                choices.append({**choice, "index": 0, "delta": new})
        usage = payload.get("usage")
        if not choices and not isinstance(usage, dict):
            return None  # the new attempt's role chunk, or what the client has
        out = {**payload, **self.head, "choices": choices}
        if isinstance(usage, dict):
            out["usage"] = _added(usage, self.extra, "prompt_tokens", "completion_tokens")
        return out

    def _text(self, kind: Kind, key: str, value: str) -> str:
        found = self.own.get(kind)
        if found is None:
            found = self.own[kind] = (self._lay_text(kind, key), 0)
        progress = found[0]
        return "" if progress is None else progress.take(value, self.last(progress.part))

    def _lay_text(self, kind: Kind, key: str) -> Progress | None:
        client = self.texts.get(kind)
        if self.mode is Rescue.PREFILL:
            if kind is Kind.REASONING:
                return None  # the client's reasoning is behind its text
            return self.continue_(client) if client else self._new_text(kind, key)
        begun = self._next_begun()
        if begun is None:
            return self._new_text(kind, key)
        if begun.kind is not kind:
            raise Diverged(f"the new answer starts a {kind.value} where the client had a "
                           f"{begun.kind.value}")
        return self.lay(begun, 0)

    def _new_text(self, kind: Kind, key: str) -> Progress:
        progress = self.new_part(kind)
        self.texts[kind] = progress.part
        self.fields.setdefault(kind, key)
        return progress

    def _next_begun(self) -> Part | None:
        """After a restart: the client's part the continuation's next one repeats."""
        index = len(self.own)
        return self.begun[index] if index < len(self.begun) else None

    def _call(self, call: Any) -> dict | None:
        if not isinstance(call, dict):
            return None
        key = ("tool", call.get("index", 0))
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        fresh = key not in self.own
        if fresh:
            self.own[key] = self._lay_call(name)
        progress, index = self.own[key]
        assert progress is not None
        arguments = function.get("arguments")
        text = progress.take(arguments, self.last(progress.part)) \
            if isinstance(arguments, str) and arguments else ""
        if fresh and progress.part not in self.begun:
            # A call the client does not have: as it came, under the client's index.
            return {**call, "index": index, "function": {**function, "arguments": text}}
        return {"index": index, "function": {"arguments": text}} if text else None

    def _lay_call(self, name: str) -> tuple[Progress, int]:
        if self.mode is Rescue.RESTART:
            begun = self._next_begun()
            if begun is not None:
                if begun.kind is not Kind.TOOL or begun.name != name:
                    raise Diverged(f"the new answer calls {name or 'a tool'} where the client "
                                   f"had a {begun.kind.value} {begun.name}".rstrip())
                index = next(i for i, p in self.tools.items() if p is begun)
                return self.lay(begun, 0), index
        index = max(self.tools, default=-1) + 1
        progress = self.new_part(Kind.TOOL)
        self.tools[index] = progress.part
        return progress, index

    def fail(self, message: str) -> bytes:
        return chat_error(message)


# ------------------------------------------------------------- Responses

# Events that carry a part's text as it grows, and where their part is.
_DELTAS = {
    "response.output_text.delta": ("content", "content_index", Kind.TEXT),
    "response.refusal.delta": ("content", "content_index", Kind.REFUSAL),
    "response.reasoning_summary_text.delta": ("summary", "summary_index", Kind.REASONING),
    "response.reasoning_text.delta": ("reasoning", "content_index", Kind.REASONING),
    "response.function_call_arguments.delta": ("arguments", None, Kind.TOOL),
}
# Events that close a part with its whole text, in the field named.
_DONES = {
    "response.output_text.done": ("content", "content_index", "text"),
    "response.refusal.done": ("content", "content_index", "refusal"),
    "response.reasoning_summary_text.done": ("summary", "summary_index", "text"),
    "response.reasoning_text.done": ("reasoning", "content_index", "text"),
    "response.function_call_arguments.done": ("arguments", None, "arguments"),
}
# Events that open or close a part, with its form (`part`).
_PART_EVENTS = {
    "response.content_part.added": ("content", "content_index"),
    "response.content_part.done": ("content", "content_index"),
    "response.reasoning_summary_part.added": ("summary", "summary_index"),
    "response.reasoning_summary_part.done": ("summary", "summary_index"),
}
_PART_KINDS = {"output_text": Kind.TEXT, "refusal": Kind.REFUSAL, "summary_text": Kind.REASONING,
               "reasoning_text": Kind.REASONING}
_TEXT_FIELD = {Kind.REFUSAL: "refusal"}  # of a part's form; "text" for the others
# Where an item keeps each family of parts.
_ITEM_LISTS = {"content": "content", "summary": "summary", "reasoning": "content"}
_ITEM_KINDS = {"function_call": Kind.TOOL, "custom_tool_call": Kind.TOOL}
_TEXT_ITEMS = ("message", "reasoning")  # items made of text parts


@dataclass(eq=False)
class Item:
    """One output item as the client has it."""

    index: int
    id: str
    type: str
    form: dict  # the item as last seen whole
    parts: dict[tuple[str, int], Part] = field(default_factory=dict)
    shapes: dict[tuple[str, int], dict] = field(default_factory=dict)  # each part's form
    done: bool = False

    def part(self, family: str, index: int, kind: Kind) -> Part:
        key = (family, index)
        found = self.parts.get(key)
        if found is None:
            found = self.parts[key] = Part(kind, name=str(self.form.get("name") or ""))
        return found

    def whole(self) -> dict:
        """The item with every part's text as the client has it."""
        form = {**self.form, "id": self.id}
        if self.type in _ITEM_KINDS:
            arguments = self.parts.get(("arguments", 0))
            if arguments is not None:
                form["input" if self.type == "custom_tool_call" else "arguments"] = arguments.text
            return form
        if self.type not in _TEXT_ITEMS:
            return form
        lists: dict[str, list[dict]] = {}
        for (family, index), part in sorted(self.parts.items(), key=lambda kv: kv[0]):
            shape = self.shapes.get((family, index)) or _shape(family, part.kind)
            lists.setdefault(_ITEM_LISTS[family], []).append(
                {**shape, _TEXT_FIELD.get(part.kind, "text"): part.text})
        return {**form, **lists}


def _shape(family: str, kind: Kind) -> dict:
    if family == "summary":
        return {"type": "summary_text"}
    if family == "reasoning":
        return {"type": "reasoning_text"}
    return {"type": "refusal"} if kind is Kind.REFUSAL else {"type": "output_text",
                                                              "annotations": []}


@dataclass
class ResponsesSplice(Splice):
    response: dict[str, Any] | None = None  # as the client's stream began it
    sequence: int = -1  # the last sequence number the client got
    items: dict[int, Item] = field(default_factory=dict)  # by the client's output index
    completed: dict | None = None  # the response the client got at the end
    # The continuation's items by its output index: the client's item, or None (left out).
    own: dict[int, Item | None] = field(default_factory=dict)
    base: int = 0  # a prefill continues the client's last content part from this index
    begun_items: list[Item] = field(default_factory=list)  # the client's when it began

    def begin(self, mode: Rescue, extra: Usage, tail: str = "") -> None:
        super().begin(mode, extra, tail)
        self.own, self.base = {}, 0
        self.begun_items = sorted(self.items.values(), key=lambda i: i.index)

    @property
    def final(self) -> dict | None:
        return self.completed

    def prefill(self) -> str | None:
        text = super().prefill()
        last = self._last_item()
        if text is None or last is None or last.done or last.type != "message":
            return None
        return "".join(p.text for _, p in sorted(last.parts.items(), key=lambda kv: kv[0])
                       if p.kind is Kind.TEXT)

    def _last_item(self) -> Item | None:
        return self.items[max(self.items)] if self.items else None

    def record(self, name: str | None, payload: dict) -> None:
        kind = name or payload.get("type")
        if not isinstance(kind, str):
            return
        self.events += 1
        sequence = payload.get("sequence_number")
        if isinstance(sequence, int):
            self.sequence = sequence
        if kind in RESPONSES_PREAMBLE:
            if self.response is None and isinstance(payload.get("response"), dict):
                self.response = payload["response"]
            return
        if kind in RESPONSES_TERMINAL:
            self.complete = True
            if kind in RESPONSES_END and isinstance(payload.get("response"), dict):
                self.completed = payload["response"]
            return
        item = self.items.get(payload.get("output_index"))  # type: ignore[arg-type]
        if kind == "response.output_item.added":
            form = payload.get("item")
            if isinstance(form, dict) and isinstance(payload.get("output_index"), int) \
                    and item is None:  # (one a continuation brings is laid already)
                item = self.items[payload["output_index"]] = Item(
                    payload["output_index"], str(form.get("id") or ""),
                    str(form.get("type") or ""), form)
                if item.type in _ITEM_KINDS:
                    self.parts.append(item.part("arguments", 0, Kind.TOOL))
                elif item.type not in _TEXT_ITEMS:
                    self.parts.append(item.part("other", 0, Kind.OTHER))
            return
        if item is None:
            return
        if kind == "response.output_item.done":
            form = payload.get("item")
            item.form = form if isinstance(form, dict) else item.form
            item.done = True
            for part in item.parts.values():
                part.done = True
        elif kind in _PART_EVENTS:
            family, index_key = _PART_EVENTS[kind]
            shape = payload.get("part")
            shape = shape if isinstance(shape, dict) else {}
            part = self._part(item, family, payload.get(index_key), _PART_KINDS.get(
                str(shape.get("type")), Kind.TEXT))
            item.shapes.setdefault((family, payload.get(index_key, 0)),
                                   {k: v for k, v in shape.items() if k not in ("text",
                                                                              "refusal")})
            part.done = part.done or kind.endswith(".done")
        elif kind in _DELTAS:
            family, index_key, part_kind = _DELTAS[kind]
            delta = payload.get("delta")
            part = self._part(item, family, payload.get(index_key) if index_key else 0,
                              part_kind)
            part.text += delta if isinstance(delta, str) else ""
        elif kind in _DONES:
            family, index_key, _ = _DONES[kind]
            self._part(item, family, payload.get(index_key) if index_key else 0,
                       Kind.TEXT).done = True

    def _part(self, item: Item, family: str, index: Any, kind: Kind) -> Part:
        index = index if isinstance(index, int) else 0
        fresh = (family, index) not in item.parts
        part = item.part(family, index, kind)
        if fresh:
            self.parts.append(part)
        return part

    def splice(self, name: str | None, payload: dict) -> dict | None:
        kind = name or payload.get("type")
        if not isinstance(kind, str) or kind in RESPONSES_PREAMBLE:
            return None
        if kind in RESPONSES_TERMINAL:
            return self._terminal(kind, payload)
        own = payload.get("output_index")
        if kind == "response.output_item.added":
            item = self._lay_item(own, payload.get("item"))
            if item is None or item in self.begun_items:
                return None  # left out, or the client's own: it had it opened
            return self._stamp({**payload, "output_index": item.index})
        item = self.own.get(own) if isinstance(own, int) else None
        if item is None:
            return None  # of an item left out, or of none at all
        if kind in _DELTAS:
            family, index_key, part_kind = _DELTAS[kind]
            progress = self._progress(item, family, payload.get(index_key) if index_key else 0,
                                      part_kind)
            delta = payload.get("delta")
            text = progress.take(delta, self.last(progress.part) and not item.done) \
                if isinstance(delta, str) else ""
            if not text:
                return None
            return self._stamp(self._on(item, payload, index_key, delta=text))
        if kind in _DONES:
            family, index_key, text_field = _DONES[kind]
            progress = self._progress(item, family, payload.get(index_key) if index_key else 0,
                                      Kind.TEXT)
            if self.mode is Rescue.RESTART or progress.held:
                progress.check_whole()
            if progress.part.done:
                return None
            return self._stamp(self._on(item, payload, index_key,
                                        **{text_field: progress.part.text}))
        if kind in _PART_EVENTS:
            family, index_key = _PART_EVENTS[kind]
            shape = payload.get("part")
            shape = shape if isinstance(shape, dict) else {}
            progress = self._progress(item, family, payload.get(index_key), _PART_KINDS.get(
                str(shape.get("type")), Kind.TEXT))
            if kind.endswith(".added"):
                if progress.part in self.begun:
                    return None  # the client's own part: it had it opened
                return self._stamp(self._on(item, payload, index_key))
            if progress.part.done:
                return None
            field_name = _TEXT_FIELD.get(progress.part.kind, "text")
            return self._stamp(self._on(item, payload, index_key,
                                        part={**shape, field_name: progress.part.text}))
        if kind == "response.output_item.done":
            if self.mode is Rescue.RESTART:
                for part in item.parts.values():
                    progress = self.laid.get(id(part))
                    if progress is not None:
                        progress.check_whole()
            if item.done:
                return None
            form = payload.get("item")
            if isinstance(form, dict):
                keep = {k: item.form[k] for k in ("call_id", "name") if k in item.form}
                item.form = {**form, **keep}
            return self._stamp({**payload, "output_index": item.index, "item": item.whole()})
        return self._stamp(self._on(item, payload, None))  # annotations, built-in tools, …

    def _lay_item(self, own: Any, form: Any) -> Item | None:
        """Which of the client's items a continuation's item continues (None:
        left out); a new one when it continues none."""
        if not isinstance(own, int) or not isinstance(form, dict):
            return None
        if own in self.own:
            return self.own[own]
        kind = str(form.get("type") or "")
        last = self._last_item()
        if self.mode is Rescue.PREFILL:
            if kind == "reasoning":
                self.own[own] = None
                return None
            if kind == "message" and last is not None and last.type == "message" \
                    and not last.done and last not in self.own.values():
                self.own[own] = last
                self.base = max((i for f, i in last.parts if f == "content"), default=0)
                return last
        else:
            mapped = sum(1 for i in self.own.values() if i is not None)
            if mapped < len(self.begun_items):
                item = self.begun_items[mapped]
                if item.type != kind or (kind in _ITEM_KINDS
                                         and item.form.get("name") != form.get("name")):
                    raise Diverged(f"the new answer has a {kind} where the client had a "
                                   f"{item.type}")
                self.own[own] = item
                for part in item.parts.values():
                    if not part.text:  # nothing to repeat: repeated by the item itself
                        self.lay(part, 0)
                return item
            self.check_whole()
        index = max(self.items, default=-1) + 1
        item = self.items[index] = Item(index, str(form.get("id") or ""), kind, form)
        self.own[own] = item
        family = "arguments" if kind in _ITEM_KINDS else None if kind in _TEXT_ITEMS else "other"
        if family is not None:
            self.parts.append(item.part(family, 0, Kind.TOOL if kind in _ITEM_KINDS
                                        else Kind.OTHER))
            self.lay(item.parts[(family, 0)], 0)
        return item

    def _progress(self, item: Item, family: str, index: Any, kind: Kind) -> Progress:
        """The progress of the continuation over the client's part it continues."""
        index = index if isinstance(index, int) else 0
        continued = self._continues(item)
        client_index = self.base + index if continued else index
        key = (family, client_index)
        part = item.parts.get(key)
        if part is not None:
            progress = self.laid.get(id(part))
            if progress is None:  # the part a prefill continues, or one a restart repeats
                progress = self.continue_(part) if continued else self.lay(part, 0)
            return progress
        progress = self.new_part(kind)
        item.parts[key] = progress.part
        return progress

    def _on(self, item: Item, payload: dict, index_key: str | None, **fields: Any) -> dict:
        """`payload` moved onto the client's item (and part)."""
        out = {**payload, **fields, "output_index": item.index}
        if "item_id" in out:
            out["item_id"] = item.id
        if index_key and isinstance(payload.get(index_key), int) and self._continues(item):
            out[index_key] = self.base + payload[index_key]
        return out

    def _continues(self, item: Item) -> bool:
        """The client's message a prefill's message continues (its parts
        are numbered on from the client's last one)."""
        return self.mode is Rescue.PREFILL and item.type == "message" \
            and item in self.begun_items

    def _terminal(self, kind: str, payload: dict) -> dict:
        response = payload.get("response")
        response = dict(response) if isinstance(response, dict) else {}
        if kind in RESPONSES_END:
            self.finished()
            response["output"] = [item.form if item.done else item.whole()
                                  for _, item in sorted(self.items.items())]
            if isinstance(response.get("usage"), dict):
                response["usage"] = _added(response["usage"], self.extra, "input_tokens",
                                           "output_tokens")
        started = self.response or {}
        for key in ("id", "created_at"):
            if key in started:
                response[key] = started[key]
        return self._stamp({**payload, "response": response})

    def _stamp(self, payload: dict) -> dict:
        return {**payload, "sequence_number": self.sequence + 1}

    def fail(self, message: str) -> bytes:
        response = {**(self.response or {"id": "resp_switchback", "object": "response"}),
                    "status": "failed", "error": {"code": "server_error", "message": message}}
        return encode({"type": "response.failed", "sequence_number": self.sequence + 1,
                       "response": response}, "response.failed")


def _added(usage: dict, extra: Usage, input_key: str, output_key: str) -> dict:
    """A usage object with what earlier attempts used added in, in the
    fields it reports."""
    if not extra.total:
        return usage
    out = dict(usage)
    for key, more in ((input_key, extra.input), (output_key, extra.output),
                      ("total_tokens", extra.total)):
        value = out.get(key)
        if isinstance(value, int):
            out[key] = value + more
    return out


# -------------------------------------------------------------- Messages

_BLOCK_KINDS = {"text": Kind.TEXT, "thinking": Kind.REASONING, "tool_use": Kind.TOOL,
                "server_tool_use": Kind.TOOL}
_BLOCK_DELTAS = {"text_delta": "text", "thinking_delta": "thinking",
                 "input_json_delta": "partial_json"}


@dataclass(eq=False)
class Block:
    """One content block as the client has it."""

    index: int
    type: str
    part: Part


@dataclass
class MessagesSplice(Splice):
    message: dict[str, Any] | None = None  # as the client's `message_start` gave it
    blocks: dict[int, Block] = field(default_factory=dict)  # by the client's index
    # The continuation's blocks by its index: the client's block, or None (left out).
    own: dict[int, Block | None] = field(default_factory=dict)
    begun_blocks: list[Block] = field(default_factory=list)

    def begin(self, mode: Rescue, extra: Usage, tail: str = "") -> None:
        super().begin(mode, extra, tail)
        self.own = {}
        self.begun_blocks = sorted(self.blocks.values(), key=lambda b: b.index)

    def prefill(self) -> str | None:
        last = self.blocks[max(self.blocks)] if self.blocks else None
        return super().prefill() if last is not None and not last.part.done else None

    def record(self, name: str | None, payload: dict) -> None:
        kind = payload.get("type") or name
        self.events += 1
        index = payload.get("index")
        if kind == "message_start" and self.message is None:
            self.message = payload.get("message") if isinstance(payload.get("message"),
                                                                dict) else {}
        elif kind == "content_block_start" and isinstance(index, int) \
                and index not in self.blocks:
            form = payload.get("content_block")
            form = form if isinstance(form, dict) else {}
            block_type = str(form.get("type") or "")
            part = Part(_BLOCK_KINDS.get(block_type, Kind.OTHER), name=str(form.get("name") or
                                                                          block_type))
            self.blocks[index] = Block(index, block_type, part)
            self.parts.append(part)
        elif kind == "content_block_delta" and index in self.blocks:
            delta = payload.get("delta")
            key = _BLOCK_DELTAS.get(delta.get("type")) if isinstance(delta, dict) else None
            if key is not None and isinstance(delta.get(key), str):  # type: ignore[union-attr]
                self.blocks[index].part.text += delta[key]  # type: ignore[index]
        elif kind == "content_block_stop" and index in self.blocks:
            self.blocks[index].part.done = True
        elif kind == "message_stop" or (kind == "message_delta" and isinstance(
                payload.get("delta"), dict) and payload["delta"].get("stop_reason")):
            self.complete = True

    def splice(self, name: str | None, payload: dict) -> dict | None:
        kind = payload.get("type") or name
        if kind == "message_start":
            return None
        if kind == "message_delta":
            self.finished()
            usage = payload.get("usage")
            if isinstance(usage, dict):
                return {**payload, "usage": _added(usage, self.extra, "input_tokens",
                                                   "output_tokens")}
            return payload
        if kind not in ("content_block_start", "content_block_delta", "content_block_stop"):
            return payload  # ping, message_stop, error
        own = payload.get("index")
        if kind == "content_block_start":
            block = self._lay_block(own, payload.get("content_block"))
            if block is None or block in self.begun_blocks:
                return None  # left out, or the client's own: it had it started
            return {**payload, "index": block.index}
        block = self.own.get(own) if isinstance(own, int) else None
        if block is None:
            return None
        progress = self.laid.get(id(block.part)) or self.lay(block.part, 0)
        if kind == "content_block_stop":
            if self.mode is Rescue.RESTART or progress.held:
                progress.check_whole()
            return None if block.part.done else {**payload, "index": block.index}
        delta = payload.get("delta")
        key = _BLOCK_DELTAS.get(delta.get("type")) if isinstance(delta, dict) else None
        if key is None or not isinstance(delta.get(key), str):  # type: ignore[union-attr]
            # A signature: the client's open block, repeated whole, takes the
            # new one's; a block the client had whole keeps its own.
            return None if block.part.done else {**payload, "index": block.index}
        text = progress.take(delta[key], self.last(block.part))  # type: ignore[index]
        return {**payload, "index": block.index, "delta": {**delta, key: text}} \
            if text else None  # type: ignore[dict-item]

    def _lay_block(self, own: Any, form: Any) -> Block | None:
        """Which of the client's blocks a continuation's block continues (None:
        left out); a new one when it continues none."""
        if not isinstance(own, int) or not isinstance(form, dict):
            return None
        if own in self.own:
            return self.own[own]
        block_type = str(form.get("type") or "")
        last = self.blocks[max(self.blocks)] if self.blocks else None
        if self.mode is Rescue.PREFILL:
            if _BLOCK_KINDS.get(block_type) is Kind.REASONING or block_type == "redacted_thinking":
                self.own[own] = None
                return None
            if block_type == "text" and last is not None and last.type == "text" \
                    and not last.part.done and last not in self.own.values():
                self.own[own] = last
                self.continue_(last.part)
                return last
        else:
            mapped = sum(1 for b in self.own.values() if b is not None)
            if mapped < len(self.begun_blocks):
                block = self.begun_blocks[mapped]
                if block.type != block_type or (block.part.kind is Kind.TOOL
                                                and block.part.name != form.get("name")):
                    raise Diverged(f"the new answer has a {block_type} block where the client "
                                   f"had a {block.type} block")
                self.own[own] = block
                self.lay(block.part, 0)
                return block
            self.check_whole()
        index = max(self.blocks, default=-1) + 1
        part = Part(_BLOCK_KINDS.get(block_type, Kind.OTHER),
                    name=str(form.get("name") or block_type))
        block = self.blocks[index] = Block(index, block_type, part)
        self.parts.append(part)
        self.own[own] = block
        self.lay(part, 0)
        return block

    def fail(self, message: str) -> bytes:
        return encode({"type": "error", "error": {"type": "api_error", "message": message}},
                      "error")


def prefilled_messages(body: dict, text: str) -> dict:
    """A chat or Messages request with `text` as the start of the assistant's answer."""
    messages = body.get("messages")
    return {**body, "messages": [*(messages if isinstance(messages, list) else ()),
                                 {"role": "assistant", "content": text}]}


def prefilled_input(body: dict, text: str) -> dict:
    """A Responses request with `text` as the start of the assistant's answer."""
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else \
        list(given) if isinstance(given, list) else []
    return {**body, "input": [*items, {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": text, "annotations": []}]}]}


def flagged(chat_body: dict) -> dict:
    """A chat request whose last (assistant) message is marked as the start
    to continue (`prefix: true`), as Mistral and DeepSeek want it."""
    messages = list(chat_body.get("messages") or ())
    if messages and isinstance(messages[-1], dict):
        messages[-1] = {**messages[-1], "prefix": True}
    return {**chat_body, "messages": messages}


class Spliced:
    """A `StreamShaper` for a continuation: the attempt's own shaper into the
    client's protocol, then the splice onto the client's stream."""

    def __init__(self, inner: StreamShaper, splice: Splice) -> None:
        self.inner, self.splice = inner, splice

    @property
    def complete(self) -> bool:
        """Judged by what the client got: an attempt that finished on a text
        the splice refused (`Diverged`) gave the client no end."""
        return self.splice.complete

    @property
    def final(self) -> dict | None:
        return self.splice.final

    def feed(self, event: Event) -> bytes:
        return self.splice.take(self.inner.feed(event))

    def finish(self) -> bytes:
        return self.fail("upstream stream ended before the answer was complete")

    def fail(self, message: str) -> bytes:
        if not self.splice.complete:
            return self.splice.fail(message)
        return self.splice.take(self.inner.fail(message))
