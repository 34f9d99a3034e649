"""The mitmproxy shell: small addons in mitmproxy's own style, composed in
the entry script. `Runtime` owns the config and what is built from it;
`Gateway` routes what its listener gets to a provider; `Guards` refuses what
must not be handled; `Calls` runs an LLM call's lifecycle; `Reporting` tells
what happened; `LlmView` shows a call as a conversation and an answer;
`Status` serves the state."""

from __future__ import annotations

from .calls import Calls
from .gateway import Gateway
from .guards import Guards
from .llmview import LlmView
from .reporting import Reporting
from .runtime import Runtime
from .status import Status


def addons() -> list[object]:
    """Switchback's addons, in hook order: a gateway request is routed before
    anything looks at its URL; guards answer before calls are handled."""
    runtime = Runtime()
    reporting = Reporting(runtime)
    return [runtime, Gateway(runtime), Guards(runtime), Calls(runtime, reporting), reporting,
            LlmView(), Status(runtime)]
