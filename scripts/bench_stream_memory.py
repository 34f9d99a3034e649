"""Memory per open stream, and whether it comes back when clients hang up.

For each target (mitmdump with Switchback, and a bare mitmdump that streams
SSE) this opens N concurrent streams through the proxy (each lasts ~30 s; all
have shown their first bytes before the figure is taken), reads the proxy's
RSS, then hangs up H of the clients mid-stream and reads it again. Printed:
RSS idle, with N open, per open stream, after the hang-ups, and with H new
streams open in their place (RSS stays put when the hung-up streams gave
their memory back: the allocator keeps it for reuse rather than for the OS).

Loopback only; the fake provider (scripts/bench_big_event.py) runs in its own
process, every process is stopped by the end.

    .venv/bin/python scripts/bench_stream_memory.py [--streams 500] [--hangups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from bench_big_event import BARE, fake_provider, mitmdump_pid  # noqa: E402
from support.proxy import running_proxy  # noqa: E402

BODY = json.dumps({"model": "slow", "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def settle(pid: int, seconds: float = 2.0) -> int:
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def measure(proxy, base: str, streams: int, hangups: int) -> dict:
    pid = mitmdump_pid(proxy.port)
    context = ssl.create_default_context(cafile=str(proxy.ca))
    figures = {}

    async def one(client: httpx.AsyncClient, opened: asyncio.Event, counter: list[int],
                  hang_up: asyncio.Event | None) -> None:
        async with client.stream("POST", f"{base}/chat/completions", content=BODY,
                                 headers={"content-type": "application/json",
                                          "authorization": "Bearer sk-bench-client-0000"}) as r:
            chunks = r.aiter_raw()
            await anext(chunks)
            counter[0] += 1
            if counter[0] == streams:
                opened.set()
            if hang_up is not None:
                await hang_up.wait()
                return  # leaving the block closes this client's connection mid-stream
            async for _ in chunks:
                pass

    # One connection per stream, as separate clients would have.
    clients = [httpx.AsyncClient(proxy=proxy.url, verify=context, trust_env=False, timeout=120)
               for _ in range(streams)]
    try:
        warm = asyncio.Event()  # a few streams first: caches, certificates, pools
        await asyncio.gather(*(one(c, warm, [0], None) for c in clients[:5]))
        figures["idle"] = await settle(pid)
        opened, hang_up, counter = asyncio.Event(), asyncio.Event(), [0]
        tasks = [asyncio.ensure_future(one(c, opened, counter, hang_up if i < hangups else None))
                 for i, c in enumerate(clients)]
        await asyncio.wait_for(opened.wait(), 60)
        figures["open"] = await settle(pid, 1.0)
        hang_up.set()
        await asyncio.gather(*tasks[:hangups])
        figures["after hang-ups"] = await settle(pid, 3.0)
        # As many new streams as hung up: RSS stays put if the hung-up ones gave
        # their memory back (the allocator keeps it for reuse, not for the OS).
        again, counter[0] = asyncio.Event(), streams - hangups
        tasks += [asyncio.ensure_future(one(c, again, counter, None)) for c in clients[:hangups]]
        await asyncio.wait_for(again.wait(), 60)
        figures["reopened"] = await settle(pid, 1.0)
        await asyncio.gather(*tasks)
        figures["all done"] = await settle(pid, 3.0)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--hangups", type=int, default=200)
    parser.add_argument("--only", choices=("switchback", "mitmproxy"), default=None)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        cert, base = stack.enter_context(fake_provider(work))
        targets = {
            "switchback": dict(config_text=f'providers:\n  fake: {{base_url: "{base}"}}\n'),
            "mitmproxy": dict(config_text=None, addon=False, extra=("-s", str(BARE))),
        }
        results = {}
        for name, options in targets.items():
            if not args.only or name == args.only:
                with running_proxy(work, work / f"conf-{name}", cert.ca, **options) as proxy:
                    results[name] = asyncio.run(measure(proxy, base, args.streams, args.hangups))
    print(f"{args.streams} concurrent streams, then {args.hangups} clients hang up (RSS, MiB)")
    print(f"{'target':<12} {'idle':>7} {'open':>7} {'KiB/stream':>11} {'after hang-ups':>15} "
          f"{'reopened':>9} {'all done':>9}")
    for name, r in results.items():
        per = (r["open"] - r["idle"]) / args.streams
        print(f"{name:<12} {r['idle'] / 1024:>7.1f} {r['open'] / 1024:>7.1f} {per:>11.0f} "
              f"{r['after hang-ups'] / 1024:>15.1f} {r['reopened'] / 1024:>9.1f} "
              f"{r['all done'] / 1024:>9.1f}")


if __name__ == "__main__":
    main()
