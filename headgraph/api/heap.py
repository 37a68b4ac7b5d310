"""Keep the cyclic garbage collector from pausing a serving process for tens of ms.

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

import gc


def settle_heap() -> None:
    """Collect once, then freeze every surviving object: later full collections walk only
    what requests created since (``gc.freeze`` keeps the objects alive as before; they
    are freed by reference counting as usual, never by the cycle collector)."""
    gc.collect()
    gc.freeze()
