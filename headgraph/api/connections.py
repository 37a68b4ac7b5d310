"""The served API's connections: none stalled for long, never more than the process can
hold.

uvicorn (on h11) closes a keep-alive connection that stays idle between requests
(``keep_alive_s``), but it waited for ever on a connection that never sent a complete
request (a slowloris sends its headers a byte at a time; an idle socket sends nothing), and
on a client that stopped reading its answer (the answer, and whatever produced it, stayed
in memory). 1,100 idle sockets took a server limited to 1,024 files down. The protocol
that :func:`guarded_protocol` makes closes (aborts) a connection when

* a request (its head and its body) has not fully arrived ``client_timeout_s`` after its
  first byte, or after the connection opened, for a first request;
* the client has not taken any of the answer for ``client_timeout_s`` (uvicorn pauses
  writing when the socket's buffer is full; the pause lasting that long is the stall);

and keeps at most the cap of connections (:func:`connection_cap`: ``max_connections``, and
never within :data:`FD_RESERVE` of the process's file limit): at the cap, a new
connection takes the place of the one that has sent nothing for longest (an idle one,
between or before requests), and only when every connection has a request under way is
the new one refused at once, with a 503. So a flood of idle sockets evicts itself, and a
client that sends its request gets in. A sweep every :data:`SWEEP_S` checks every
connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("headgraph.api")
FD_RESERVE = 64
"""File descriptors kept free of client connections: the database files, its WAL,
temporary spools, logs, worker threads' pipes."""
SWEEP_S = 0.5
_DONE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


def connection_cap(requested: int) -> int:
    """The most client connections to accept: ``requested``, at most the process's file
    limit less :data:`FD_RESERVE`. Raises the soft file limit to the hard one first (as
    servers usually do), where the system allows it."""
    try:
        import resource
    except ImportError:  # Windows: no file limit to read
        return requested
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(1, min(requested, soft - FD_RESERVE))


def _busy_response(retry_after_s: int) -> bytes:
    body = json.dumps({"errors": [{
        "message": "this server has as many connections open as it takes "
                   "(max_connections); retry after Retry-After seconds.",
        "extensions": {"code": "SERVER_BUSY", "retryable": True}}]}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: {retry_after_s}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


def guarded_protocol(client_timeout_s: float, max_connections: int,
                     retry_after_s: int = 1) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the guards of the module doc."""
    busy = _busy_response(retry_after_s)

    class GuardedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._refused = False
            self._request_since: float | None = None
            self._paused_since: float | None = None
            self._heard = False  # bytes of the current request received
            self._idle_since = time.monotonic()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections and not _evict(self.connections):
                self._refused = True
                transport.write(busy)
                transport.close()
                return
            super().connection_made(transport)
            self._request_since = time.monotonic()
            state = self.server_state  # one sweep per server
            if not getattr(state, "headgraph_sweeping", False):
                state.headgraph_sweeping = True  # type: ignore[attr-defined]
                self.loop.call_later(SWEEP_S, _sweep, self.loop, self.connections)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._refused:
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._request_since is None and self.conn.their_state is h11.IDLE:
                self._request_since = time.monotonic()  # the next request's first byte
            self._heard = True
            super().data_received(data)
            if self.conn.their_state in _DONE:
                self._request_since = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._request_since = None  # idle: keep_alive_s applies until the next byte
            self._heard = False
            self._idle_since = time.monotonic()
            if self.conn.their_state is h11.SEND_BODY:  # a pipelined request has begun
                self._request_since = time.monotonic()

        def pause_writing(self) -> None:
            self._paused_since = time.monotonic()
            super().pause_writing()

        def resume_writing(self) -> None:
            self._paused_since = None
            super().resume_writing()

        def idle(self) -> float | None:
            """Since when this connection has had nothing to do (no request under way,
            not a byte of the next), or ``None`` when it is busy."""
            busy = self._heard or (self.cycle is not None and not self.cycle.response_complete)
            return None if busy else self._idle_since

        def stalled(self, now: float) -> str | None:
            """Why this connection should be closed now, or ``None``."""
            limit = f"{client_timeout_s:g} s (client_timeout_s)"
            if self._paused_since is not None and now - self._paused_since > client_timeout_s:
                return f"it took none of its answer for {limit}"
            if self._request_since is not None and now - self._request_since > client_timeout_s:
                return f"it did not send a whole request within {limit}"
            return None

        def abort(self, why: str) -> None:
            log.info("closed the connection of %s: %s",
                     f"{self.client[0]}:{self.client[1]}" if self.client else "a client", why)
            self.transport.abort()

    return GuardedH11


def _evict(connections: set) -> bool:
    """Close the connection idle longest to make room; False when none is idle."""
    idle = [(since, c) for c in connections
            if (since := getattr(c, "idle", lambda: None)()) is not None]
    if not idle:
        return False
    _, oldest = min(idle, key=lambda pair: pair[0])
    oldest.abort("it was the idlest when the server had max_connections open")
    connections.discard(oldest)  # its connection_lost comes later; the place is free now
    return True


def _sweep(loop: asyncio.AbstractEventLoop, connections: set) -> None:
    """Close the stalled connections of one server, then again in :data:`SWEEP_S`
    (until its loop closes). A transport already closing is aborted too: a close waits
    for the buffered answer to leave, which a client that does not read never lets."""
    now = time.monotonic()
    for connection in list(connections):
        stalled = getattr(connection, "stalled", None)
        why = stalled(now) if stalled is not None else None
        if why is not None and connection.transport is not None:
            connection.abort(why)
    if not loop.is_closed():
        loop.call_later(SWEEP_S, _sweep, loop, connections)
