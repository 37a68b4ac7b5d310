"""A serving process's heap: no long pauses of the cyclic collector, memory given back.

CPython's full (generation 2) collection walks every tracked container object. A server
has hundreds of thousands of them that live as long as the process (modules, the GraphQL
schema, SQLAlchemy's metadata, strawberry's types), so each full collection, triggered
by request garbage every few seconds under load, stopped the event loop for 40-63 ms,
stalling every request in flight at once: the whole p99 of a paced load
(``benchmarks/bench_api.py``). :func:`settle_heap` moves what exists once the server is
built into the permanent generation (:func:`gc.freeze`), which collections skip; full
collections then take 1-2 ms. :func:`headgraph.server.serve` calls it, not the app:
an app made inside another program (tests, a notebook) leaves that program's heap alone.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time


def settle_heap() -> None:
    """Collect once, then freeze every surviving object: later full collections walk only
    what requests created since (``gc.freeze`` keeps the objects alive as before; they
    are freed by reference counting as usual, never by the cycle collector)."""
    gc.collect()
    gc.freeze()


# --- giving memory back -----------------------------------------------------------------

ARENAS = 2
"""glibc malloc arenas a serving process uses (``mallopt(M_ARENA_MAX)``; glibc's default
is 8 per core): each worker thread that allocated in an arena of its own kept its freed
pages there, so a burst of large requests left the process tens of MB larger for good."""
TRIM_AFTER_BYTES = 1_000_000
"""An answer at least this large is followed by a trim (:class:`Trimmer`)."""
TRIM_EVERY_S = 0.5  # at most this often: a trim walks every arena


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another C library: nothing to tune
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def limit_arenas(n: int = ARENAS) -> None:
    """Use at most ``n`` malloc arenas (glibc; a no-op elsewhere). Called once by
    :func:`headgraph.server.serve` before the worker threads start."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(ctypes.c_int(-8), ctypes.c_int(n))  # M_ARENA_MAX


class Trimmer:
    """Give freed heap pages back to the system after a large request (glibc
    ``malloc_trim``, in a worker thread, at most every :data:`TRIM_EVERY_S`): the
    answer's objects are freed when it has left, but glibc keeps the pages for reuse, so
    without this a 300 MB answer left the process 300 MB larger."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._last = 0.0
        self._scheduled = False
        self._lock = threading.Lock()

    def after(self, n_bytes: int, heavy: bool = False) -> None:
        """A request built an answer of ``n_bytes`` (sent or refused), or was ``heavy``
        (stopped at its deadline, its half-built answer dropped): trim if large. A trim
        asked for within :data:`TRIM_EVERY_S` of the last is deferred to the window's end,
        never dropped, so the last of several large requests ending together (six
        downloads let go at once) is followed by a trim too."""
        if self._libc is None or (n_bytes < TRIM_AFTER_BYTES and not heavy):
            return
        with self._lock:
            if self._scheduled:  # a trim still to come covers this request
                return
            self._scheduled = True
            wait = max(0.0, self._last + TRIM_EVERY_S - time.monotonic())
        threading.Thread(target=self._trim_after, args=(wait,), name="headgraph-trim",
                         daemon=True).start()

    def _trim_after(self, wait: float) -> None:
        if wait:
            time.sleep(wait)
        with self._lock:
            self._scheduled = False
            self._last = time.monotonic()
        self._trim()

    def _trim(self) -> None:
        # the request's tasks, futures and frames form cycles that hold what it read (30
        # aliases of a graph's 1 MB metadata: 50 MB); a full collection frees them, in
        # 2-50 ms with the start-up heap frozen (measured), the interpreter's lock held
        gc.collect()
        arrow = sys.modules.get("pyarrow")
        if arrow is not None:  # Arrow's own allocator (mimalloc or jemalloc) keeps pages too
            arrow.default_memory_pool().release_unused()
        self._libc.malloc_trim(ctypes.c_size_t(0))
