"""The gateway listener's routing: which provider a plain-HTTP request means,
and that the addon puts that provider's URL on the flow before anything else
looks (tables here; the listener end to end in e2e/test_gateway_e2e.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import exceptions
from mitmproxy.net.http import url
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from switchback.providers import Provider, ProviderTable
from switchback.shell.gateway import Gateway, listen_address, mode_spec, route
from switchback.shell.runtime import Runtime

VERSION = ("anthropic-version", "2023-06-01")
TABLE = ProviderTable({
    "local": Provider("local", "https://localhost:9001/v1"),
    "bare": Provider("bare", "https://bare.example:8443"),
    "msgs": Provider("msgs", "https://msgs.example/api/anthropic"),
})


@pytest.mark.parametrize("target,headers,provider,url", [
    # The openai SDKs with base_url http://HOST:PORT/v1
    ("/v1/chat/completions", [], "openai", "https://api.openai.com/v1/chat/completions"),
    ("/v1/responses", [], "openai", "https://api.openai.com/v1/responses"),
    ("/v1/models", [], "openai", "https://api.openai.com/v1/models"),
    ("/v1/chat/completions?api-version=1", [], "openai",
     "https://api.openai.com/v1/chat/completions?api-version=1"),
    ("/v1", [], "openai", "https://api.openai.com/v1"),
    # Anthropic's SDKs and Claude Code with base_url http://HOST:PORT
    ("/v1/messages", [], "anthropic", "https://api.anthropic.com/v1/messages"),
    ("/v1/messages?beta=true", [VERSION], "anthropic",
     "https://api.anthropic.com/v1/messages?beta=true"),
    ("/v1/messages/count_tokens?beta=true", [], "anthropic",
     "https://api.anthropic.com/v1/messages/count_tokens?beta=true"),
    ("/v1/models", [VERSION], "anthropic", "https://api.anthropic.com/v1/models"),
    ("/v1/models", [("Anthropic-Version", "2023-06-01")], "anthropic",
     "https://api.anthropic.com/v1/models"),
    # Not a Messages call: a path that only starts like one
    ("/v1/messagesx", [], "openai", "https://api.openai.com/v1/messagesx"),
    # /NAME/… stands for provider NAME's base URL; a repeated /v1 is not doubled
    ("/groq/chat/completions", [], "groq", "https://api.groq.com/openai/v1/chat/completions"),
    ("/groq/v1/chat/completions", [], "groq", "https://api.groq.com/openai/v1/chat/completions"),
    ("/local/responses", [], "local", "https://localhost:9001/v1/responses"),
    ("/anthropic/v1/messages?beta=true", [VERSION], "anthropic",
     "https://api.anthropic.com/v1/messages?beta=true"),
    ("/msgs/v1/messages", [VERSION], "msgs", "https://msgs.example/api/anthropic/v1/messages"),
    ("/bare/v1/models", [], "bare", "https://bare.example:8443/v1/models"),
    ("/bare", [], "bare", "https://bare.example:8443"),
    ("/local?x=1", [], "local", "https://localhost:9001/v1?x=1"),
])
def test_routes(target, headers, provider, url):
    found = route(target, headers, TABLE)
    assert found is not None
    assert (found.provider.name, found.url) == (provider, url)


@pytest.mark.parametrize("target", [
    "/", "", "/nothing/v1/models", "//evil.example/v1/models", "/v1@evil.example/x",
    "/v2/chat/completions", "/chat/completions", "/groqx/chat/completions",
])
def test_what_names_no_provider_is_not_routed(target):
    assert route(target, [VERSION], TABLE) is None


def test_a_configured_provider_replaces_the_builtin_the_unprefixed_paths_reach():
    table = ProviderTable({"openai": Provider("openai", "https://localhost:7/v1"),
                           "anthropic": Provider("anthropic", "https://localhost:8")})
    assert route("/v1/responses", [], table).url == "https://localhost:7/v1/responses"
    assert route("/v1/messages", [], table).url == "https://localhost:8/v1/messages"


TARGET_CHARS = st.sampled_from(list("/?@#:.%\\v1") + ["groq", "local", "bare", "msgs",
                                                         "v1", "evil.example", "messages"])


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(TARGET_CHARS, max_size=12), version=st.booleans())
def test_a_route_never_leaves_the_origin_of_the_provider_it_names(pieces, version):
    """Whatever the client puts in its request target, the URL mitmproxy is
    given (parsed as mitmproxy parses it) is on the routed provider's origin:
    the client's credential goes nowhere else."""
    target = "/" + "".join(pieces)
    found = route(target, [VERSION] if version else [], TABLE)
    if found is None:
        return
    scheme, host, port, path = url.parse(found.url)
    assert (scheme.decode(), host.decode(), port) == found.provider.origin
    assert path.decode().startswith("/")


@pytest.mark.parametrize("value,expected", [
    ("8082", ("127.0.0.1", 8082)), (" 8082 ", ("127.0.0.1", 8082)),
    ("0.0.0.0:9", ("0.0.0.0", 9)), ("[::1]:9", ("::1", 9)), (":9", ("127.0.0.1", 9)),
])
def test_listen_addresses(value, expected):
    assert listen_address(value) == expected


@pytest.mark.parametrize("value", ["x", "host:", "host:http", "70000", "0"])
def test_bad_listen_addresses_say_the_form(value):
    with pytest.raises(ValueError, match=r"expected \[HOST:\]PORT"):
        listen_address(value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_mode_listens_where_asked(host):
    mode = ProxyMode.parse(mode_spec(host, 8082))
    assert (mode.listen_host(), mode.listen_port()) == (host, 8082)
    assert mode.address[0].endswith(".invalid")  # fails closed if a request went unrouted


def gateway_flow(gateway: Gateway, path: str, headers: dict[str, str] | None = None,
                 mode: str | None = None) -> tflow.HTTPFlow:
    """A request as mitmproxy's reverse mode hands it over: aimed at the mode's target."""
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse(mode or gateway.spec)
    flow.request.scheme, flow.request.host, flow.request.port = "http", "x.invalid", 80
    flow.request.path = path
    flow.request.headers.clear()
    flow.request.headers["host"] = "x.invalid"
    for name, value in (headers or {}).items():
        flow.request.headers[name] = value
    return flow


def test_the_addon_adds_its_listener_and_routes_its_requests():
    runtime = Runtime()
    gateway = Gateway(runtime)
    with taddons.context(runtime, gateway) as tctx:
        tctx.configure(gateway, switchback_gateway="18082")
        assert tctx.options.mode == ["regular", mode_spec("127.0.0.1", 18082)]
        flow = gateway_flow(gateway, "/v1/messages?beta=true",
                            {"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"})
        gateway.requestheaders(flow)
        assert flow.request.url == "https://api.anthropic.com/v1/messages?beta=true"
        assert flow.request.headers["host"] == "api.anthropic.com"
        assert flow.request.headers["x-api-key"] == "sk-ant-client"  # its own origin: kept
        assert flow.response is None

        lost = gateway_flow(gateway, "/elsewhere?key=secret")
        gateway.requestheaders(lost)
        assert lost.response is not None and lost.response.status_code == 404
        error = json.loads(lost.response.content)["error"]
        assert error["code"] == "unknown_gateway_path" and "secret" not in error["message"]

        # Another reverse listener of the user's is none of the gateway's business.
        other = gateway_flow(gateway, "/v1/models", mode="reverse:https://example.com@9999")
        gateway.requestheaders(other)
        assert other.request.url == "http://x.invalid/v1/models" and other.response is None

        tctx.configure(gateway, switchback_gateway="127.0.0.1:18083")  # moved: one listener
        assert tctx.options.mode == ["regular", mode_spec("127.0.0.1", 18083)]
        tctx.configure(gateway, switchback_gateway="")
        assert tctx.options.mode == ["regular"] and gateway.spec is None


def test_a_bad_gateway_option_is_refused_with_the_form():
    runtime = Runtime()
    gateway = Gateway(runtime)
    with taddons.context(runtime, gateway) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"expected \[HOST:\]PORT"):
            tctx.configure(gateway, switchback_gateway="localhost:http")
