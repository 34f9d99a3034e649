"""Every wait on an upstream answer's body ends: with its bytes, its end, or an error.

aiohttp bounds the wait for each read with its `sock_read` timeout, and
`keep_waiting` moves that bound from first-byte to idle. One case slips
through. When the bytes after the head cannot be parsed — a chunked body
whose chunk size is garbage (`ZZZ\\r\\n`), say — aiohttp's C parser raises
inside `ResponseHandler.data_received`, which closes the connection and
marks the *connection* failed, but never tells the *body's* reader: that
reader is neither fed an end nor an error, the failure cancels the read
timer, and the parser is gone, so the connection's loss feeds it nothing
either. Whoever reads the body (the first-chunk gate, a committed stream's
delivery, `read_body`) then waits for ever, whatever the timeouts say.
(Read in aiohttp 3.14's `client_proto.py` and `_http_parser.pyx`, and
shown by tests/engine/test_bounded_reads.py.)

Whether it happens depends on how the provider's bytes arrive: when the
head and the broken chunk come in one read, the error is raised at once
while the head is read, and the call fails over; when the head comes in a
read of its own, the body's reader is handed out first and is left
waiting. So the same provider fails over for one client and hangs for the
next, depending on scheduling alone.

`watch` closes the gap for one answer, without a cost per read:

- when the connection under an unfinished body is lost, the body fails
  at once (`ClientPayloadError`, one of the transport errors): the usual
  case, a provider that closes after its garbage;
- a timer at the connection's current read timeout fails the body if the
  connection has failed meanwhile, for a provider that stays silent after
  its garbage (TLS may wait for its close for a long time before the
  connection counts as lost). While the connection is healthy, aiohttp's
  own timeout is in charge and the timer only re-arms.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

import aiohttp

# The body each connection currently carries (None between answers). A
# connection is registered once, so a pooled one gathers no callbacks.
_carrying: weakref.WeakKeyDictionary[Any, _Watch | None] = weakref.WeakKeyDictionary()


class _Watch:
    __slots__ = ("response", "protocol", "timer")

    def __init__(self, response: aiohttp.ClientResponse, protocol: Any) -> None:
        self.response, self.protocol = response, protocol
        self.timer: asyncio.TimerHandle | None = None

    def check(self) -> bool:
        """Fail the body if the connection under it failed or is gone; True
        while there is an unfinished body on a live connection."""
        content = self.response.content
        if content.is_eof() or content.exception() is not None:
            return False
        failure = self.protocol.exception()
        closed = self.protocol.closed  # done (or None) once the connection's loss ran
        if failure is None and closed is not None and not closed.done():
            # Alive, or closing: a body delimited by the connection's close
            # gets its end from the loss itself, so only a loss that left the
            # body unfinished is a failure.
            return True
        why = f": {failure}" if failure is not None else ""
        error = aiohttp.ClientPayloadError(f"the connection failed before the body ended{why}")
        if failure is not None:
            error.__cause__ = failure
        content.set_exception(error)
        return False

    def arm(self) -> None:
        seconds = self.protocol.read_timeout
        if seconds:
            self.timer = asyncio.get_running_loop().call_later(seconds, self.tick)

    def rearm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.arm()

    def tick(self) -> None:
        self.timer = None
        if self.check():
            self.arm()
        else:
            self.stop()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if _carrying.get(self.protocol) is self:
            _carrying[self.protocol] = None


def _lost(protocol_ref: weakref.ref, closed: asyncio.Future) -> None:
    if not closed.cancelled():
        closed.exception()  # seen: a lost pooled connection is no error to log
    protocol = protocol_ref()
    watch = _carrying.get(protocol) if protocol is not None else None
    if watch is not None:
        watch.check()
        watch.stop()


def watch(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """Make sure a wait on `response`'s body cannot outlive its connection
    or (once the connection failed) its read timeout. Returns `response`."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if connection is None or protocol is None or response.content.is_eof():
        return response  # the body is all in, or there is none
    this = _Watch(response, protocol)
    if not this.check():
        return response
    registered = protocol in _carrying
    _carrying[protocol] = this
    if not registered:
        closed = protocol.closed  # None only once lost, which `check` has ruled out
        if closed is not None:
            closed.add_done_callback(functools.partial(_lost, weakref.ref(protocol)))
    connection.add_callback(this.stop)  # run when the answer lets go of it: read or closed
    this.arm()
    return response


def rearm(response: aiohttp.ClientResponse) -> None:
    """`response`'s read timeout has just changed (`keep_waiting`): its watch
    follows, so a stream that committed under a long first-byte timeout is
    watched at its idle timeout from now on."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    this = _carrying.get(protocol) if protocol is not None else None
    if this is not None and this.response is response:
        this.rearm()
