"""State shared by replicas through Redis (or Valkey), without ever waiting for it.

Every kind of state keeps its local store — the near cache — and a call reads
only that. Writes land locally at once and go to Redis in the background: a
writer task sends whatever queued up meanwhile as one pipeline, so a call
costs at most one round trip, and no call waits for it. Each write of a
mirrored kind is also published; every other replica applies it to its own
near cache as it arrives, so a cooldown recorded anywhere is honoured
everywhere within a message's latency. Large kinds (conversations) are not
mirrored: they are written through and fetched on a local miss, with a tight
timeout.

Every command is bounded by its connection's socket timeouts rather than
by cancelling it from outside (a cancelled redis-py call may wait on its own
clean-up), and the listener polls, so a quiet channel is never mistaken for
a dead one. When Redis goes away, a breaker opens: writes are kept aside (the latest per
key), reads stay local, nothing waits. A reconnect loop looks for Redis again;
once it answers, the replica rejoins: what it learned meanwhile is written
through, and the shared state is read back into its near caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..health.cooldown import Cooling, Strikes
from ..vocabulary import Reason
from .stores import MemoryStore, Stores

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT = 0.5  # seconds; at start and when looking for Redis again
OP_TIMEOUT = 1.0  # a pipeline or a fetch that takes longer means Redis is not well
FETCH_TIMEOUT = 0.05  # a call may wait this long for a value missing locally
RETRY_EVERY = 1.0
MAX_PENDING = 100_000  # writes kept aside while Redis is away (the latest per key)


@dataclass(frozen=True)
class Codec:
    """How one kind's values travel: to text and back, and which of two wins."""

    encode: Callable[[Any], str]
    decode: Callable[[str], Any]
    newer: Callable[[Any, Any], Any] = lambda mine, theirs: theirs


def key_text(key: Hashable) -> str:
    return json.dumps(list(key) if isinstance(key, tuple) else key, separators=(",", ":"))


def key_value(text: str) -> Hashable:
    key = json.loads(text)
    return tuple(key) if isinstance(key, list) else key


@dataclass
class Op:
    kind: str
    verb: str  # "put", "del" or "clear"
    key: str = ""
    value: str = ""
    expires: float = 0.0  # epoch seconds
    publish: bool = True


class Link:
    """One replica's connection to the shared state."""

    def __init__(self, url: str, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.url, self.prefix, self.clock = url, prefix, clock
        self.replica = secrets.token_hex(6)
        self.healthy = False
        self.channel = f"{prefix}:events"
        self._client: aioredis.Redis | None = None
        self._stores: dict[str, SharedStore] = {}
        self._queue: list[Op] = []
        self._pending: dict[tuple[str, str], Op] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._reconnecting = False
        self._warned = False
        self._listening: aioredis.Redis | None = None
        self._listener: asyncio.Task | None = None
        self._writer: asyncio.Task | None = None
        self._stopping = False

    @property
    def client(self) -> aioredis.Redis | None:
        """The command connection while Redis answers, for kinds that need
        more than a store (the ledger's scripts); None while the breaker is open."""
        return self._client if self.healthy else None

    def store(self, kind: str, local: MemoryStore, codec: Codec, mirrored: bool) -> SharedStore:
        self._stores[kind] = store = SharedStore(kind, local, self, codec, mirrored)
        return store

    def redis_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    # lifecycle

    async def start(self) -> None:
        """Join, or start on the local stores and keep looking for Redis."""
        if not await self._join():
            self._lost("not reachable at start; running on this replica's memory")

    async def stop(self) -> None:
        """Send what is queued (briefly), then close everything (bounded)."""
        self._stopping = True
        if self.healthy and self._queue and self._client is not None:
            with contextlib.suppress(Exception):
                await self._send(self._client, self._queue)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=OP_TIMEOUT)
        for client in (self._client, self._listening):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), OP_TIMEOUT)

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._ended(t, name))
        return task

    def _ended(self, task: asyncio.Task, name: str) -> None:
        """A background task that ended by surprise leaves the breaker open."""
        if not task.cancelled() and task.exception() is not None:
            logger.error(f"switchback: shared state {name} failed: {task.exception()!r}")
            self._lost(f"{name} failed; running on this replica's memory")

    def _clients(self) -> tuple[aioredis.Redis, aioredis.Redis]:
        """A client for commands and one for listening, both with tight
        timeouts and no retries of their own: a gap in what we heard must
        open the breaker, so that the rejoin reads everything back."""
        def client() -> aioredis.Redis:
            return aioredis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT,
                                     socket_timeout=OP_TIMEOUT, decode_responses=True,
                                     retry=Retry(NoBackoff(), 0))
        return client(), client()

    async def _join(self) -> bool:
        """Connect, listen, write through what was kept aside, read the shared
        state back. False when Redis does not answer."""
        client, listening = self._clients()
        pending = dict(self._pending)
        try:
            await client.ping()
            pubsub = listening.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self.channel)
            for key in pending:
                self._pending.pop(key, None)
            await self._send(client, [op for op in pending.values()
                                      if op.verb != "put" or op.expires > self.clock()])
            for kind, store in self._stores.items():
                if store.mirrored:
                    await self._load(client, kind, store)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            for key, op in pending.items():  # kept aside again; what came since is newer
                self._pending.setdefault(key, op)
            for closing in (client, listening):
                with contextlib.suppress(Exception):
                    await closing.aclose()
            logger.debug(f"switchback: shared state: {exc!r}")
            return False
        for old in (self._client, self._listening):
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
        self._client, self._listening = client, listening
        self.healthy, self._warned = True, False
        # Writes made while joining were kept aside: they go out now, in order.
        self._queue = [*self._pending.values(), *self._queue]
        self._pending.clear()
        self._listener = self._spawn(self._listen(pubsub, client), "listener")
        if self._writer is None or self._writer.done():
            self._writer = self._spawn(self._write(), "writer")
        self._wake.set()
        logger.info(f"switchback: shared state on {self.url_shown} (replica {self.replica})")
        return True

    @property
    def url_shown(self) -> str:
        """The URL without credentials or query (a password may be in either)."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2].partition('?')[0]}"

    def _lost(self, why: str) -> None:
        """Open the breaker: keep writes aside, read locally, look for Redis again."""
        if self._stopping:
            return
        if self.healthy or not self._warned:
            logger.warning(f"switchback: shared state {self.url_shown} {why}")
            self._warned = True
        self.healthy = False
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        for op in self._queue:  # in order: the latest write of a key wins
            self._keep_aside(op)
        self._queue.clear()
        if not self._reconnecting:
            self._reconnecting = True
            self._spawn(self._reconnect(), "reconnect")

    async def _reconnect(self) -> None:
        try:
            while not self.healthy:
                await asyncio.sleep(RETRY_EVERY)
                if await self._join():
                    logger.warning(f"switchback: shared state {self.url_shown} is back; "
                                   "this replica rejoined")
        finally:
            self._reconnecting = False

    # writes

    def queue(self, op: Op) -> None:
        if self.healthy:
            self._queue.append(op)
            self._wake.set()
        else:
            self._keep_aside(op)

    def _keep_aside(self, op: Op) -> None:
        """Keep a write for when Redis is back, the latest per key — only for
        the small, mirrored kinds (a conversation is large, and stays in this
        replica's memory)."""
        if not self._stores[op.kind].mirrored:
            return
        key = (op.kind, op.key)
        if op.verb == "clear":  # what it clears need not travel
            self._pending = {k: v for k, v in self._pending.items() if k[0] != op.kind}
        self._pending.pop(key, None)  # re-inserted last: replayed in the order written
        if len(self._pending) < MAX_PENDING:
            self._pending[key] = op

    async def _write(self) -> None:
        """Send what queued up meanwhile, one pipeline at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._queue = self._queue, []
            if not ops or self._client is None or not self.healthy:
                self._queue = ops + self._queue
                continue
            try:
                await self._send(self._client, ops)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._queue = ops + self._queue
                self._lost(f"lost ({type(exc).__name__}); running on this replica's memory")

    async def _send(self, client: aioredis.Redis, ops: list[Op]) -> None:
        """`ops` in order, pipelined; a clear runs after what came before it."""
        now = self.clock()
        pipe = client.pipeline(transaction=False)
        for op in ops:
            if op.verb == "clear":
                await pipe.execute()
                names = [name async for name in client.scan_iter(
                    match=self.redis_key(op.kind, "*"), count=1000)]
                if names:
                    await client.delete(*names)
                pipe = client.pipeline(transaction=False)
            elif op.verb == "del":
                pipe.delete(self.redis_key(op.kind, op.key))
            else:
                ttl = max(1, int((op.expires - now) * 1000))
                pipe.set(self.redis_key(op.kind, op.key), op.value, px=ttl)
            if op.publish:
                # The replica first, outside the JSON: our own events come back
                # to us too, and are skipped without parsing.
                pipe.publish(self.channel, self.replica + json.dumps(
                    {"o": op.verb, "k": op.kind, "key": op.key, "v": op.value,
                     "x": op.expires}, separators=(",", ":")))
        await pipe.execute()

    # reads

    async def fetch(self, kind: str, key: str) -> tuple[str, float] | None:
        """(value, expiry) from Redis, or None — quickly, whatever Redis does."""
        if not self.healthy or self._client is None:
            return None
        name = self.redis_key(kind, key)
        pipe = self._client.pipeline(transaction=False)
        pipe.get(name)
        pipe.pttl(name)
        # Not cancelled when slow (that would drop the connection): it finishes
        # in the background and the call goes on without it.
        answer = asyncio.ensure_future(pipe.execute())
        answer.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, _ = await asyncio.wait({answer}, timeout=FETCH_TIMEOUT)
        if not done:
            return None  # slow, not necessarily gone: the writer will tell
        try:
            value, ttl = answer.result()
        except (RedisError, OSError) as exc:
            self._lost(f"lost ({type(exc).__name__}); running on this replica's memory")
            return None
        if value is None or ttl is None or ttl <= 0:
            return None
        return value, self.clock() + ttl / 1000

    async def claim(self, kind: str, key: str, value: str, ttl: float) -> bool | None:
        """Set `key` only if Redis holds none (SET NX): True when this replica got
        it, False when another holds it or Redis was slow to say, None when
        Redis is away (the caller decides alone)."""
        if not self.healthy or self._client is None:
            return None
        answer = asyncio.ensure_future(self._client.set(
            self.redis_key(kind, key), value, nx=True, px=max(1, int(ttl * 1000))))
        answer.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, _ = await asyncio.wait({answer}, timeout=FETCH_TIMEOUT)
        if not done:
            return False  # it may yet land: better no probe than two
        try:
            return bool(answer.result())
        except (RedisError, OSError) as exc:
            self._lost(f"lost ({type(exc).__name__}); running on this replica's memory")
            return None

    async def _load(self, client: aioredis.Redis, kind: str, store: SharedStore) -> None:
        """Read one mirrored kind back into its near cache."""
        names = [name async for name in client.scan_iter(match=self.redis_key(kind, "*"),
                                                          count=1000)]
        for start in range(0, len(names), 500):
            batch = names[start:start + 500]
            pipe = client.pipeline(transaction=False)
            for name in batch:
                pipe.get(name)
                pipe.pttl(name)
            answers = await pipe.execute()
            now = self.clock()
            for name, value, ttl in zip(batch, answers[::2], answers[1::2]):
                if value is not None and ttl is not None and ttl > 0:
                    store.heard(name[len(self.redis_key(kind, "")):], value, now + ttl / 1000)

    async def _listen(self, pubsub: Any, client: aioredis.Redis) -> None:
        """Apply the other replicas' writes as they are published."""
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=OP_TIMEOUT / 2)
                if message is not None and message.get("type") == "message":
                    self._apply(message.get("data") or "")
        except (RedisError, OSError) as exc:
            if self.healthy and client is self._client:  # not a listener of an older join
                self._lost(f"lost ({type(exc).__name__}); running on this replica's memory")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _apply(self, data: str) -> None:
        if data.startswith(self.replica):
            return
        try:
            event = json.loads(data[len(self.replica):])
            store = self._stores.get(event["k"])
            if store is None:
                return
            if event["o"] == "put":
                store.heard(event["key"], event["v"], float(event["x"]))
            elif event["o"] == "del":
                store.local.delete(key_value(event["key"]))
            elif event["o"] == "clear":
                store.local.clear()
        except (ValueError, KeyError, TypeError):
            logger.debug("switchback: shared state: an event it could not read")


class SharedStore:
    """A kind's near cache, written through to Redis in the background."""

    def __init__(self, kind: str, local: MemoryStore, link: Link, codec: Codec,
                 mirrored: bool) -> None:
        self.kind, self.local, self.link, self.codec = kind, local, link, codec
        self.mirrored = mirrored

    def get(self, key: Hashable) -> Any | None:
        return self.local.get(key)

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        self.local.put(key, value, ttl)
        self.link.queue(Op(self.kind, "put", key_text(key), self.codec.encode(value),
                           self.link.clock() + ttl, self.mirrored))

    def delete(self, key: Hashable) -> None:
        self.local.delete(key)
        self.link.queue(Op(self.kind, "del", key_text(key), publish=self.mirrored))

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        return self.local.items()

    def __len__(self) -> int:
        return len(self.local)

    def clear(self) -> None:
        self.local.clear()
        self.link.queue(Op(self.kind, "clear", publish=True))

    async def claim(self, key: Hashable, value: Any, ttl: float) -> bool:
        """`value` at `key` unless anybody holds it: this replica's copy first,
        then Redis, atomically (SET NX); while Redis is away, this replica alone."""
        if self.local.get(key) is not None:
            return False
        text = self.codec.encode(value)
        got = await self.link.claim(self.kind, key_text(key), text, ttl)
        if got is False or self.local.get(key) is not None:
            return False
        self.local.put(key, value, ttl)
        if got is None:  # Redis away: kept aside like any write
            self.link.queue(Op(self.kind, "put", key_text(key), text,
                               self.link.clock() + ttl, self.mirrored))
        elif self.mirrored:  # tell the others' near caches (Redis holds it already)
            self.link.queue(Op(self.kind, "put", key_text(key), text,
                               self.link.clock() + ttl, True))
        return True

    async def fetch(self, key: Hashable) -> Any | None:
        """The value, from the near cache, else from Redis (briefly)."""
        value = self.local.get(key)
        if value is not None or self.mirrored:
            return value
        found = await self.link.fetch(self.kind, key_text(key))
        if found is None:
            return None
        text, expires = found
        self.heard(key_text(key), text, expires)
        return self.local.get(key)

    def heard(self, key: str, text: str, expires: float) -> None:
        """Take a value another replica wrote (or Redis holds) into the near cache."""
        ttl = expires - self.link.clock()
        if ttl <= 0:
            return
        try:
            theirs = self.codec.decode(text)
            name = key_value(key)
        except (ValueError, TypeError, KeyError):
            return
        mine = self.local.get(name)
        if mine is not None and self.codec.newer(mine, theirs) is mine:
            return
        self.local.put(name, theirs, ttl)


def _cooling(text: str) -> Cooling:
    data = json.loads(text)
    probe_at = data.get("probe_at")
    return Cooling(float(data["until"]), Reason(data["reason"]), bool(data.get("no_retry")),
                   None if probe_at is None else float(probe_at))


def _strikes(text: str) -> Strikes:
    data = json.loads(text)
    return Strikes(int(data["count"]), float(data["last"]), float(data["reacted"]))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


CODECS = {
    "cooldowns": Codec(lambda c: _dump({"until": c.until, "reason": c.reason.value,
                                        "no_retry": c.no_retry, "probe_at": c.probe_at}),
                       _cooling,
                       newer=lambda mine, theirs: theirs if theirs.until > mine.until else mine),
    "strikes": Codec(lambda s: _dump({"count": s.count, "last": s.last, "reacted": s.reacted}),
                     _strikes),
    "uses": Codec(_dump, lambda text: float(json.loads(text)),
                  newer=lambda mine, theirs: max(mine, theirs)),
    "protocols": Codec(str, str),
    "conversations": Codec(str, str),
    "affinity": Codec(str, str),
    "quirks": Codec(str, str),
    "probes": Codec(_dump, lambda text: float(json.loads(text))),
    "sessions": Codec(str, str),
    "reasoning": Codec(str, str),
}
# small, read on every call
MIRRORED = {"cooldowns", "strikes", "uses", "protocols", "quirks", "probes", "sessions",
            "reasoning"}


def shared_stores(link: Link, memory: Stores) -> Stores:
    """`memory`'s stores (their bounds kept) as near caches of the shared state."""
    return Stores(**{kind: link.store(kind, getattr(memory, kind), codec, kind in MIRRORED)
                     for kind, codec in CODECS.items()})
