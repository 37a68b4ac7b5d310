"""Downloads that never hold the database while a client reads: produce, then send.

An export (``/export/...``) or an attribution graph (``/graphs/...``) is written whole
into a :class:`Spool` (memory up to :data:`SPOOL_MEMORY`, a temporary file beyond) by a
thread of its own, inside its database session; the session (and, on DuckDB, the file)
is let go before the first byte goes to the client, and the answer is then sent from the
spool (:meth:`Download.send`). Before, the writer streamed straight to the socket: six
clients that asked for a graph and never read held all six database turns, and every
other request waited for as long as they stayed connected.

A client that stops reading is closed after ``client_timeout_s`` by the connection guard
(:mod:`headgraph.api.connections`); its spool goes with it. At most
:data:`~headgraph.api.turns.MAX_DOWNLOADS` downloads are produced or sent at once
(``Service.downloads``), and at most :data:`~headgraph.api.turns.MAX_PRODUCING` are
produced at once (``Service.producing``); a download waits at most ``max_wait_s`` for
either, then gets 503 ``SERVER_BUSY``.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from headgraph.api.heap import Trimmer
from headgraph.api.http import Receive, Send
from headgraph.api.turns import Turns
from headgraph.errors import LimitExceededError

T = TypeVar("T")
SPOOL_MEMORY = 1 << 20  # bytes of a download kept in memory; the rest goes to a temp file
CHUNK = 64 * 1024


class Cancelled(Exception):
    """The client left while its download was produced: stop producing."""


class Spool(io.TextIOBase):
    """A write-only text stream into a spooled temporary file, UTF-8 encoded.

    ``limit``: most bytes it takes (:class:`LimitExceededError` past it; ``None``: no
    limit). ``cancelled``: checked at each write, so a producer stops soon after its client
    has gone.
    """

    def __init__(self, limit: int | None = None, what: str = "this answer") -> None:
        super().__init__()
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        self.limit = limit
        self._what = what
        self.size = 0
        self.cancelled = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.cancelled.is_set():
            raise Cancelled
        data = s.encode()
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise LimitExceededError(
                f"{self._what} is over this server's limit of {self.limit:,} bytes "
                "(max_response_bytes); ask for a smaller view.")
        self._file.write(data)
        return len(s)

    def read_chunk(self) -> bytes:
        return self._file.read(CHUNK)

    def rewind(self) -> None:
        self._file.seek(0)

    def close(self) -> None:
        self._file.close()
        super().close()


async def in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new thread (not the event loop's worker pool, which GraphQL
    requests need: a download may take a minute to produce)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if done.cancelled():
            return
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop has closed: nobody waits
            pass

    threading.Thread(target=run, name="headgraph-download", daemon=True).start()
    return await done


class Download:
    """One download: a :class:`Spool`, the thread that fills it, the client watched for
    leaving. Use as ``async with Download(receive) as d: ...``. ``producing``: the turns
    a producer waits for (at most ``wait_s``) before it runs."""

    def __init__(self, receive: Receive, limit: int | None = None,
                 what: str = "this answer", *, producing: Turns | None = None,
                 wait_s: float = 10.0, trimmer: Trimmer | None = None) -> None:
        self.spool = Spool(limit, what)
        self._trimmer = trimmer
        self._gone = asyncio.ensure_future(_until_disconnect(receive))
        self._producing = producing
        self._wait_s = wait_s

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gone.cancel()
        self.spool.cancelled.set()  # a producer still running stops at its next write
        self.spool.close()
        if self._trimmer is not None:  # what producing it took, back to the system
            self._trimmer.after(self.spool.size)

    async def produce(self, fn: Callable[..., T], *args: Any) -> T:
        """Run producer ``fn(*args)`` (which writes into :attr:`spool`) in a thread of its
        own; :class:`Cancelled` as soon as the client leaves."""
        give_back = None
        if self._producing is not None:
            give_back = await self._producing.take(self._wait_s)
        work = asyncio.ensure_future(in_own_thread(fn, *args))
        if give_back is not None:
            work.add_done_callback(lambda _: give_back())  # when the thread ends
        await asyncio.wait({self._gone, work}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            self.spool.cancelled.set()
            work.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise Cancelled
        return work.result()

    async def send(self, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send what the spool holds (with a Content-Length), 64 KB at a time; each chunk
        waits until the client has taken enough of the last ones (uvicorn's flow
        control), the connection guard closes a client that stops taking them, and
        sending ends as soon as the client has gone."""
        spool = self.spool
        spool.rewind()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(spool.size).encode())]})
        sent = 0
        while sent < spool.size and not self._gone.done():
            chunk = spool.read_chunk()
            if not chunk:
                break
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": sent < spool.size})
        if sent == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
