"""Switchback benchmark: what does the addon cost over bare mitmproxy?

Side by side in one run, against one fake provider over TLS on 127.0.0.1:
direct, through bare mitmdump, through mitmdump + Switchback; streaming and
not; at several concurrencies. Prints median and p90 time-to-first-byte and
total time, and the ratios to bare mitmdump. Loopback only; it prints
figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import loopback_guard  # noqa: E402,F401  (refuse non-loopback sockets)
from support.fakeprovider import FakeProvider, Reply  # noqa: E402
from support.proxy import running_proxy  # noqa: E402
from support.tlsca import make_server_cert  # noqa: E402

TEXT = " ".join(f"token{i}" for i in range(40))  # 40 stream events per answer


async def one_call(client: httpx.AsyncClient, url: str, stream: bool) -> tuple[float, float]:
    body = {"model": "bench", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}
    start = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body,
                             headers={"authorization": "Bearer sk-bench"}) as answer:
        async for _ in answer.aiter_raw():
            first = first or time.perf_counter()
        if answer.status_code != 200:
            raise RuntimeError(f"bench call failed: {answer.status_code}")
    end = time.perf_counter()
    return (first or end) - start, end - start


async def run_cell(client: httpx.AsyncClient, url: str, stream: bool, calls: int,
                   concurrency: int) -> tuple[list[float], list[float]]:
    queue = iter(range(calls))
    ttfb: list[float] = []
    total: list[float] = []

    async def worker() -> None:
        for _ in queue:
            a, b = await one_call(client, url, stream)
            ttfb.append(a)
            total.append(b)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfb, total


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls per cell (default 100)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        cert = make_server_cert(work / "upstream")
        fake = stack.enter_context(FakeProvider(cert, "bench", default=Reply(text=TEXT)))
        config = f'providers: {{bench: {{base_url: "{fake.base_url}"}}}}\n'
        bare = stack.enter_context(running_proxy(work, work / "confdir", cert.ca, None,
                                                 addon=False))
        switchback = stack.enter_context(running_proxy(work, work / "confdir", cert.ca,
                                                       config))
        url = fake.base_url + "/chat/completions"
        modes = {
            "direct": dict(verify=ssl.create_default_context(cafile=str(cert.ca))),
            "mitmdump": dict(proxy=bare.url,
                             verify=ssl.create_default_context(cafile=str(bare.ca))),
            "switchback": dict(proxy=switchback.url,
                               verify=ssl.create_default_context(cafile=str(switchback.ca))),
        }

        async def measure() -> dict:
            results = {}
            for concurrency in args.concurrency:
                for stream in (False, True):
                    for mode, options in modes.items():
                        async with httpx.AsyncClient(trust_env=False, timeout=60,
                                                     limits=httpx.Limits(max_connections=64),
                                                     **options) as client:
                            await run_cell(client, url, stream, 5, 1)  # warm up
                            results[concurrency, stream, mode] = await run_cell(
                                client, url, stream, args.calls, concurrency)
            return results

        results = asyncio.run(measure())

    print(f"Switchback bench: {args.calls} calls per cell, answer of 40 events, "
          f"fake provider over TLS on 127.0.0.1; times in ms")
    print(f"{'conc':>4} {'kind':<6} {'mode':<10} {'ttfb p50':>9} {'ttfb p90':>9} "
          f"{'total p50':>10} {'total p90':>10} {'ttfb÷bare':>10} {'total÷bare':>11}")
    for (concurrency, stream, mode), (ttfb, total) in results.items():
        base_ttfb, base_total = results[concurrency, stream, "mitmdump"]
        print(f"{concurrency:>4} {'stream' if stream else 'plain':<6} {mode:<10} "
              f"{statistics.median(ttfb) * 1000:>9.1f} {p90(ttfb) * 1000:>9.1f} "
              f"{statistics.median(total) * 1000:>10.1f} {p90(total) * 1000:>10.1f} "
              f"{statistics.median(ttfb) / statistics.median(base_ttfb):>10.2f} "
              f"{statistics.median(total) / statistics.median(base_total):>11.2f}")


if __name__ == "__main__":
    main()
