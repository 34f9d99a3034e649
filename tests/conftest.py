"""Shared fixtures: loopback-only sockets, certificates, fake providers, a proxy.

`proxy` and `fakes` start processes and servers for one test. `shared` hands
out long-lived ones instead — one per fake name and per config text, made
fresh (state reset, log read from here) for each test — for the many tests
that need no process of their own: starting a mitmdump costs more than most
tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

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


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory, confdir: Path, server_cert: ServerCert
           ) -> Iterator[SimpleNamespace]:
    """`shared.fake(name, **kwargs)` and `shared.proxy(config_text)`: started
    once for the session, fresh for each caller; all stop at the end."""
    with ExitStack() as stack:
        fakes: dict[tuple, FakeProvider] = {}
        proxies: dict[str, Proxy] = {}

        def fake(name: str, **kwargs) -> FakeProvider:
            key = (name, *sorted(kwargs.items()))
            if key not in fakes:
                fakes[key] = stack.enter_context(FakeProvider(server_cert, name, **kwargs))
            fakes[key].reset()
            return fakes[key]

        def proxy(config_text: str) -> Proxy:
            if config_text not in proxies:
                proxies[config_text] = stack.enter_context(running_proxy(
                    tmp_path_factory.mktemp("shared"), confdir, server_cert.ca, config_text,
                    status=True))
            proxies[config_text].fresh()
            return proxies[config_text]

        yield SimpleNamespace(fake=fake, proxy=proxy)
        for running in proxies.values():  # all told at once; the stack then waits for each
            running.process.terminate()
