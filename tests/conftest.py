"""Shared fixtures: loopback-only sockets, certificates, fake providers, a proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from support import loopback_guard  # noqa: F401  (installs the guard in this process)
from support.fakeprovider import FakeProvider
from support.proxy import Proxy, running_proxy
from support.tlsca import ServerCert, make_server_cert


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    return make_server_cert(tmp_path_factory.mktemp("upstream-ca"))


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy CA for the whole session (made by the first mitmdump)."""
    return tmp_path_factory.mktemp("mitmproxy-confdir")


@pytest.fixture
def fakes(server_cert: ServerCert) -> Iterator[Callable[..., FakeProvider]]:
    """Factory for fake providers; all of them stop after the test."""
    with ExitStack() as stack:
        def make(name: str, **kwargs) -> FakeProvider:
            return stack.enter_context(FakeProvider(server_cert, name, **kwargs))
        yield make


@pytest.fixture
def proxy(tmp_path: Path, confdir: Path, server_cert: ServerCert
          ) -> Iterator[Callable[..., Proxy]]:
    """Factory: start mitmdump + Switchback with a config text; stopped after the test."""
    with ExitStack() as stack:
        def start(config_text: str | None, trust_upstream: bool = True, **kwargs) -> Proxy:
            ca = server_cert.ca if trust_upstream else None
            return stack.enter_context(
                running_proxy(tmp_path, confdir, ca, config_text, **kwargs))
        yield start
