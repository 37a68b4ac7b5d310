"""Streaming a response that a worker thread writes: a text writer whose chunks reach the
ASGI ``send`` as they are made.

:func:`headgraph.graph.export.write_export` writes to a ``TextIO`` from blocking code (it
reads Arrow batches from the database). :class:`ChunkWriter` is that ``TextIO``: it buffers
about 64 KB, encodes it, and hands it to a :class:`Channel`. The channel carries items from
the worker thread to the event loop with backpressure: the worker may run at most ``depth``
chunks ahead of the client, so a slow client holds a few hundred KB, never the whole export.
When the client goes away the channel is cancelled and the worker's next ``put`` raises
:class:`Cancelled`, which ends the export early.
"""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

CHUNK_CHARS = 64 * 1024


class Cancelled(Exception):
    """The consumer is gone: stop producing."""


class Channel:
    """Items from one producer thread to one consumer coroutine, at most ``depth`` ahead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = threading.Semaphore(depth)
        self._cancelled = threading.Event()

    def put(self, item: Any) -> None:
        """Send ``item`` (producer thread); waits while ``depth`` items are unread."""
        while not self._slots.acquire(timeout=0.1):
            if self._cancelled.is_set():
                raise Cancelled
        if self._cancelled.is_set():
            raise Cancelled
        self._push(item)

    def close(self, item: Any) -> None:
        """Send a last item (producer thread) without waiting for a slot."""
        self._push(item)

    def _push(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop has closed (server shutting down): nobody listens
            self._cancelled.set()
            raise Cancelled from None

    async def get(self) -> Any:
        """The next item (consumer coroutine)."""
        item = await self._queue.get()
        self._slots.release()
        return item

    def cancel(self) -> None:
        """The consumer stops listening; the producer's next :meth:`put` raises."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class ChunkWriter(io.TextIOBase):
    """A write-only text stream that sends UTF-8 chunks of about ``chunk_chars`` characters
    as ``("data", bytes)`` items through a :class:`Channel`."""

    def __init__(self, channel: Channel, chunk_chars: int | None = None) -> None:
        super().__init__()
        self._channel = channel
        self._limit = chunk_chars or CHUNK_CHARS
        self._parts: list[str] = []
        self._size = 0
        self.bytes_sent = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._parts.append(s)
        self._size += len(s)
        if self._size >= self._limit:
            self.flush()
        return len(s)

    def close(self) -> None:
        self._parts.clear()  # only an explicit flush() sends: a dropped writer sends nothing
        super().close()

    def flush(self) -> None:
        if self._parts:
            data = "".join(self._parts).encode()
            self._parts.clear()
            self._size = 0
            self.bytes_sent += len(data)
            self._channel.put(("data", data))
