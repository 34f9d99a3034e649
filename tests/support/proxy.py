"""Run a real mitmdump with the Switchback addon, and clients that trust it."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "addon" / "switchback_addon.py"
GUARD = Path(__file__).with_name("loopback_guard.py")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mitmdump exited {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mitmdump did not listen on {port} within {seconds}s:\n{log.read_text()}")


@dataclass
class Proxy:
    port: int
    ca: Path  # the proxy CA clients must trust
    log: Path
    status_port: int = 0  # Switchback's status server, when the proxy was started with one
    _since: int = 0  # log bytes that belong to earlier tests of a shared proxy
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_client(self, **kwargs) -> httpx.Client:
        return httpx.Client(proxy=self.url, verify=ssl.create_default_context(cafile=str(self.ca)),
                            trust_env=False, **kwargs)

    def openai(self, base_url: str, api_key: str = "sk-client-key", **kwargs):
        import openai
        return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                             http_client=self.http_client(timeout=30), **kwargs)

    def output(self) -> str:
        """The log, from the start or since `fresh`."""
        return self.log.read_bytes()[self._since:].decode("utf-8", "replace")

    def log_line(self, needle: str, seconds: float = 10) -> str:
        """The log's latest line holding `needle`, waiting (bounded) for it: a
        call's line is written just after the call ends — a stream's, once it
        has closed, a moment after the client read its end."""
        deadline = time.monotonic() + seconds
        while True:
            found = [line for line in self.output().splitlines() if needle in line]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {needle!r}:\n{self.output()}")
            time.sleep(0.05)

    def fresh(self) -> None:
        """Make a shared proxy new for the next test: Switchback's state reset
        (POST /reset) and the log read from here on."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.status_port}/reset",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        self._since = self.log.stat().st_size


def mitmproxy_command(tool: str, port: int, confdir: Path, upstream_ca: Path | None,
                      config: Path | None, extra: tuple[str, ...] = (),
                      addon: bool = True) -> list[str]:
    command = [str(BIN / tool), "-s", str(GUARD)] + (["-s", str(ADDON)] if addon else [])
    command += ["--listen-host", "127.0.0.1", "--listen-port", str(port),
               "--set", f"confdir={confdir}"]
    if not any(arg.startswith("connection_strategy=") for arg in extra):
        command += ["--set", "connection_strategy=lazy"]
    if upstream_ca is not None:
        command += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    if config is not None:
        command += ["--set", f"switchback_config={config}"]
    return command + list(extra)


@contextmanager
def running_proxy(workdir: Path, confdir: Path, upstream_ca: Path | None,
                  config_text: str | None, extra: tuple[str, ...] = (),
                  env: dict[str, str] | None = None, tool: str = "mitmdump",
                  addon: bool = True, status: bool = False) -> Iterator[Proxy]:
    """A mitmdump (or mitmweb) with the addon; stopped (and waited for) on
    exit. `status`: with Switchback's status server on a free port."""
    status_port = free_port() if status else 0
    if status:
        extra = (*extra, "--set", f"switchback_status_port={status_port}")
    config = None
    if config_text is not None:
        config = workdir / "switchback.yaml"
        config.write_text(config_text)
    port = free_port()
    log = workdir / f"{tool}-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            mitmproxy_command(tool, port, confdir, upstream_ca, config, extra, addon),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        wait_for_port(port, process, log)
        if status:
            wait_for_port(status_port, process, log)
        yield Proxy(port, confdir / "mitmproxy-ca-cert.pem", log, status_port, process=process)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a process a test started: asked first, killed if it will not go."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
