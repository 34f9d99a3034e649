"""The "LLM" content view: an LLM call's request as a conversation and its
answer assembled, under a strip that says who asked for what and who served
it — for the client's flow and for each attempt flow.

A thin shell over `protocols.assemble`: it picks the protocol from the
flow's path, reads the strip from what `Reporting` put in the flow's
metadata, and registers itself with whichever contentview API the running
mitmproxy has (11: `View` returning styled lines; 12: `Contentview`
returning text). mitmproxy's "auto" picks it for LLM calls; the raw and
JSON views stay in the view menu.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import contentviews, http

from ..protocols.assemble import assemble, protocol_of, render_answer, render_request, strip_lines

NAME = "LLM"
PRIORITY = 2.0  # above JSON (1) and raw: an LLM call is shown as one by default
NEW_API = hasattr(contentviews, "Contentview")  # mitmproxy 12


def tokens_text(tokens: dict[str, int], estimated: bool) -> str:
    """All four kinds, always: a 0 says as much as a number."""
    shown = ", ".join(f"{tokens.get(kind, 0)} {kind}"
                      for kind in ("input", "cached", "output", "reasoning"))
    return f"~{shown} (estimated)" if estimated else shown


def call_strip(call: dict) -> list[tuple[str, str]]:
    """The client's flow: asked, served, by whom and in which protocol, at what cost."""
    served = call.get("served") or {}
    asked, answered = call.get("protocol", ""), served.get("protocol", "")
    protocol = f"{asked} → {answered} (translated)" if answered and answered != asked else asked
    cost = call.get("cost_usd")
    return [("call", str(call.get("call", ""))),
            ("model asked", str(call.get("model", ""))),
            ("model served", str(served.get("model", "")) + (
                f" (answered as {served['answered']})"
                if served.get("answered") not in (None, served.get("model")) else "")),
            ("provider", str(served.get("provider", ""))),
            ("protocol", protocol),
            ("tokens", tokens_text(call["tokens"], bool(call.get("estimated")))
             if call.get("tokens") else ""),
            ("cost", "" if "tokens" not in call else
             "unpriced" if cost is None else f"${cost:.6f}".rstrip("0").rstrip(".")),
            ("outcome", str(call.get("outcome", ""))),
            ("attempts", str(call.get("trail", "")).replace(" → ", "\n→ "))]


def attempt_strip(attempt: dict) -> list[tuple[str, str]]:
    """An attempt's flow: which one, of which call, and what came of it."""
    call = attempt.get("call")
    return [("attempt", f"{attempt.get('n')}/{attempt.get('of')} of call {call} "
                        f"(filter: ~comment {call})"),
            ("provider", str(attempt.get("provider", ""))),
            ("key", str(attempt.get("key", ""))),
            ("result", str(attempt.get("result", "")))]


def render(data: bytes, flow: Any, message: Any) -> str | None:
    """The view's text for one message of an LLM call's flow, or None when
    it is not one (or not readable as one)."""
    if not isinstance(flow, http.HTTPFlow) or not data:
        return None
    protocol = protocol_of(flow.request.path)
    if protocol is None:
        return None
    if isinstance(message, http.Request):
        lines = render_request(protocol, data)
    else:
        assembled = assemble(protocol, data)
        lines = render_answer(assembled) if assembled is not None else None
    if lines is None:
        return None
    metadata = flow.metadata
    strip = call_strip(metadata["switchback"]) if "switchback" in metadata else \
        attempt_strip(metadata["switchback_attempt"]) if "switchback_attempt" in metadata else []
    head = strip_lines(strip)
    return "\n".join([*head, "", *lines] if head else lines)


def priority(data: bytes, flow: Any) -> float:
    """Chosen automatically for an LLM endpoint's bodies; never for others."""
    if not data or not isinstance(flow, http.HTTPFlow) or protocol_of(flow.request.path) is None:
        return -1 if NEW_API else 0
    return PRIORITY


if NEW_API:
    class LlmContentview(contentviews.Contentview):
        """mitmproxy 12's contentview API."""

        @property
        def name(self) -> str:
            return NAME

        def prettify(self, data: bytes, metadata: Any) -> str:
            text = render(data, metadata.flow, metadata.http_message)
            if text is None:
                raise ValueError("not an LLM request or answer this view can read")
            return text

        def render_priority(self, data: bytes, metadata: Any) -> float:
            return priority(data, metadata.flow)

    VIEW: Any = LlmContentview()
else:
    class LlmLegacyView(contentviews.View):
        """mitmproxy 11's contentview API: lines of (style, text)."""

        name = NAME

        def __call__(self, data: bytes, *, flow: Any = None, http_message: Any = None,
                     **unknown: Any) -> Any:
            text = render(data, flow, http_message)
            if text is None:
                return None  # mitmproxy falls back to raw
            return "LLM call", iter([[("header" if line.startswith("──") else "text", line)]
                                     for line in text.split("\n")])

        def render_priority(self, data: bytes, *, flow: Any = None, **unknown: Any) -> float:
            return priority(data, flow)

    VIEW = LlmLegacyView()


class LlmView:
    """Registers the view while the addon is loaded."""

    name = "switchback_llmview"  # mitmproxy's name for it: unique among addons

    def load(self, loader: Any) -> None:
        if not NEW_API and contentviews.get(NAME) is not None:
            contentviews.remove(contentviews.get(NAME))  # a script reload
        contentviews.add(VIEW)

    def done(self) -> None:
        if not NEW_API and VIEW in contentviews.views:
            contentviews.remove(VIEW)
