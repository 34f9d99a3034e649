"""Header rules between the client, Switchback and the providers.

Which of the client's headers may go to which upstream, which of an
upstream answer's headers may reach the client, and how credentials are
shown where people look. The rules are about trust: the client's
credentials go only to the origin it addressed, and a provider's account
headers only back to the client whose call it was.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..plan import Candidate
from ..protocols.spec import spec
from ..recognise import CREDENTIAL_HEADERS, LlmCall, client_credential, fingerprint

# Not forwarded either way: connection-level, or describing bytes we re-frame
# (Switchback decodes every answer, so no content-encoding survives it).
HOP_BY_HOP = frozenset({"host", "content-length", "content-encoding", "connection", "keep-alive",
                        "proxy-authorization", "proxy-authenticate", "proxy-connection", "te",
                        "trailer", "transfer-encoding", "upgrade", "accept-encoding"})
# What may go to a host the client did not address, or with a key it did not send:
# describing the request, never identifying the client (plus what the upstream's
# protocol says describes a call of it: `Spec.describing`).
PORTABLE = frozenset({"content-type", "accept", "user-agent"})
# What a provider says about the account that served: only for the client's own calls.
ACCOUNT_HEADERS = frozenset({"set-cookie", "openai-organization", "openai-project"})


def own_call(call: LlmCall, candidate: Candidate) -> bool:
    """The client's own credentials to the origin it addressed."""
    return candidate.key is None and candidate.provider.origin == call.provider.origin


def upstream_headers(call: LlmCall, candidate: Candidate) -> list[tuple[str, str]]:
    """The client's headers for its own call; otherwise only those that
    describe the request, plus the configured key the way the upstream's
    protocol sends keys, plus the headers that protocol needs and the client
    did not send."""
    own = own_call(call, candidate)
    upstream = spec(candidate.protocol)
    out = [(name, value) for name, value in call.headers
           if (lower := name.lower()) not in HOP_BY_HOP and not name.startswith(":")
           and (own or lower in PORTABLE or lower in upstream.describing
                or lower.startswith("x-stainless-"))]
    if candidate.key is not None:
        out.append(upstream.credential(candidate.key))
    sent = {name.lower() for name, _ in out}
    out += [(name, value) for name, value in upstream.defaults if name not in sent]
    return out


def response_headers(headers: Iterable[tuple[str, str]], own: bool) -> list[tuple[str, str]]:
    """An upstream answer's headers as the client may see them."""
    drop = HOP_BY_HOP if own else HOP_BY_HOP | ACCOUNT_HEADERS
    return [(k, v) for k, v in headers if k.lower() not in drop]


def masked(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers fit to show: credentials replaced by their fingerprint."""
    return [(k, f"<key {fingerprint(client_credential([(k, v)]) or v)}>")
            if k.lower() in CREDENTIAL_HEADERS else (k, v) for k, v in headers]
