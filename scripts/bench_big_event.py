"""One huge SSE event through the proxy: what it costs, and what it does to everyone else.

A provider that sends one 10 MB event must not stall the proxy. For each
target (mitmdump with Switchback, and a bare mitmdump that streams SSE) this
prints the proxy's CPU seconds for one such stream, alone, and the p50/p99
of small streaming calls made 10 at a time while the big one is on its way.

Everything runs on 127.0.0.1: a fake provider in its own process (TLS), the
proxies under test, curl as the big call's client (its own process, so
reading 10 MB does not slow the small calls' client), httpx for the small
calls. Every process started here is stopped by the end.

    .venv/bin/python scripts/bench_big_event.py [--mb 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from support import loopback_guard  # noqa: E402,F401  (refuse non-loopback sockets)
from support.fakeprovider import chat_events, sse  # noqa: E402
from support.proxy import running_proxy  # noqa: E402
from support.tlsca import ServerCert, make_server_cert  # noqa: E402

BARE = Path("/work/shared/bench/mitm_stream_sse.py")
SMALL_AT_ONCE = 10
# Loaded into each proxy: how late its event loop wakes a task that sleeps
# 5 ms — the longest stall is what every other call waits through.
LAG_ADDON = """
import asyncio, time

class LoopLag:
    def running(self):
        self.task = asyncio.get_running_loop().create_task(self.watch())

    async def watch(self):
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.005)
            late = time.monotonic() - start - 0.005
            if late > 0.01:
                print(f"LOOPLAG {late * 1000:.1f}", flush=True)

addons = [LoopLag()]
"""


def big_event(size: int) -> bytes:
    """One chat chunk whose content is `size` bytes of JSON-escaped text."""
    line = 'All work and no play makes "Jack" a dull boy.\n'
    text = (line * (size // len(line) + 1))[:size]
    chunk = {"id": "chatcmpl-big", "object": "chat.completion.chunk", "created": 1,
             "model": "big", "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                "content": text},
                                          "finish_reason": None}]}
    return sse(chunk)


def serve(cert_dir: Path, port_file: Path, size: int) -> None:
    """The fake provider (run in a child process): model "big" gets one huge
    event, anything else a small stream."""
    from support.loopserver import LoopServer, Script

    cert = ServerCert(cert_dir / "ca.pem", cert_dir / "server.pem", cert_dir / "server.key")
    huge = [big_event(size), sse("[DONE]")]
    small = [sse(e) for e in chat_events("small", "a small answer of a few words", usage=False)]
    slow = [sse(e) for e in chat_events("slow", " ".join(["word"] * 60), usage=False)]

    def handler(seen) -> Script:
        model = json.loads(seen.body).get("model")
        if model == "big":
            return Script.sse(huge)
        if model == "slow":  # a stream that stays open (scripts/bench_stream_memory.py)
            return Script.sse(slow, pause=0.5)
        return Script.sse(small)

    async def main() -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert.cert, cert.key)
        async with LoopServer(handler, tls) as server:
            port_file.write_text(str(server.port))
            await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def fake_provider(work: Path, size: int = 0) -> Iterator[tuple[ServerCert, str]]:
    """The fake provider's process, running: (its certificate, its base URL)."""
    cert = make_server_cert(work / "upstream")
    port_file = work / "port"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(cert.ca.parent),
                               str(port_file), str(size)], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.05)
        yield cert, f"https://localhost:{port_file.read_text()}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mitmdump_pid(port: int) -> int:
    """The mitmdump listening on `port` (running_proxy keeps its Popen to itself)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"/mitmdump") for a in argv[:2]) and str(port).encode() in argv:
                return int(entry.name)
    raise RuntimeError(f"no mitmdump on port {port}")


def curl_big(proxy_url: str, ca: Path, base: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-x", proxy_url, "--cacert", str(ca),
         "--noproxy", "", "-H", "content-type: application/json", "-H",
         "authorization: Bearer sk-bench-client-0000",
         "-d", json.dumps({"model": "big", "stream": True,
                           "messages": [{"role": "user", "content": "big"}]}),
         f"{base}/chat/completions"], stdin=subprocess.DEVNULL)


async def small_calls_meanwhile(client: httpx.AsyncClient, base: str,
                                big: subprocess.Popen) -> list[float]:
    """Rounds of SMALL_AT_ONCE concurrent small streams until the big call ends."""
    body = {"model": "small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    async def one() -> float:
        started = time.perf_counter()
        async with client.stream("POST", f"{base}/chat/completions", json=body,
                                 headers={"authorization": "Bearer sk-bench-client-0000"}) as r:
            async for _ in r.aiter_raw():
                pass
            r.raise_for_status()
        return time.perf_counter() - started

    times: list[float] = []
    while True:
        times += await asyncio.gather(*(one() for _ in range(SMALL_AT_ONCE)))
        if big.poll() is not None:
            return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(name: str, proxy, base: str, runs: int, profile: Path | None) -> dict:
    pid = mitmdump_pid(proxy.port)
    context = ssl.create_default_context(cafile=str(proxy.ca))

    async def go() -> dict:
        limits = httpx.Limits(max_connections=SMALL_AT_ONCE,
                              max_keepalive_connections=SMALL_AT_ONCE)
        async with httpx.AsyncClient(proxy=proxy.url, verify=context, trust_env=False,
                                     limits=limits, timeout=60) as client:
            big = curl_big(proxy.url, proxy.ca, base)  # warm-up: connections, caches
            await small_calls_meanwhile(client, base, big)
            assert big.wait() == 0, f"{name}: the big call failed"
            cpu: list[float] = []
            spy = None if profile is None else subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                 "--rate", "250", "--pid", str(pid), "--output", str(profile)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            await asyncio.sleep(0 if spy is None else 1)
            for _ in range(runs):
                before = cpu_seconds(pid)
                assert curl_big(proxy.url, proxy.ca, base).wait() == 0
                await asyncio.sleep(0.3)  # the stream's end, on the proxy's side
                cpu.append(cpu_seconds(pid) - before)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            latencies: list[float] = []
            since = proxy.log.stat().st_size
            for _ in range(runs):
                big = curl_big(proxy.url, proxy.ca, base)
                await asyncio.sleep(0.05)  # the big event is on its way
                latencies += await small_calls_meanwhile(client, base, big)
                assert big.wait() == 0
            stalls = [float(line.split()[1]) for line in
                      proxy.log.read_bytes()[since:].decode(errors="replace").splitlines()
                      if line.startswith("LOOPLAG ")]
            return {"cpu": statistics.median(cpu), "p50": percentile(latencies, 50) * 1000,
                    "p99": percentile(latencies, 99) * 1000, "n": len(latencies),
                    "stall": max(stalls, default=0.0)}

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of the big event, MB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("switchback", "mitmproxy"), default=None)
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the big calls (collapsed stacks) into this file; "
                             "with --only, one target")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        cert, base = stack.enter_context(fake_provider(work, size))
        lag = work / "loop_lag.py"
        lag.write_text(LAG_ADDON)
        targets = {
            "switchback": dict(config_text=f'providers:\n  fake: {{base_url: "{base}"}}\n',
                               extra=("-s", str(lag))),
            "mitmproxy": dict(config_text=None, addon=False, extra=("-s", str(BARE), "-s", str(lag))),
        }
        results = {}
        for name, options in targets.items():
            if args.only and name != args.only:
                continue
            with running_proxy(work, work / f"conf-{name}", cert.ca, **options) as proxy:
                results[name] = measure(name, proxy, base, args.runs, args.profile)
        print(f"one {args.mb:g} MB event; small calls {SMALL_AT_ONCE} at a time meanwhile")
        print(f"{'target':<12} {'CPU s (big)':>12} {'p50 ms':>8} {'p99 ms':>8} {'calls':>6} "
              f"{'longest loop stall ms':>22}")
        for name, r in results.items():
            print(f"{name:<12} {r['cpu']:>12.2f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['n']:>6} "
                  f"{r['stall']:>22.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
