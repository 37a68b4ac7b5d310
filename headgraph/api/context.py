"""What one GraphQL request carries: its database session, its settings, its DataLoaders.

A request holds one read-only connection from start to end (see
:mod:`headgraph.api.execute` for why), so everything it reads is one consistent view.
Resolvers are async (DataLoaders batch on the event loop) but the driver is blocking:
:class:`AsyncDB` runs each queries-layer call in a worker thread, one at a time, because
a DuckDB connection serves one thread at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from headgraph.api.loaders import Loaders
from headgraph.api.settings import Settings
from headgraph.queries.session import GraphDB

P = ParamSpec("P")
T = TypeVar("T")


class AsyncDB:
    """One request's :class:`GraphDB` session, callable from async code.

    ``await db.run(feeders_of, model_id, names, "K")`` runs ``feeders_of(session, ...)``.
    """

    def __init__(self, session: GraphDB) -> None:
        self.session = session
        self._lock = asyncio.Lock()

    async def run(self, fn: Callable[Concatenate[GraphDB, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        async with self._lock:
            return await asyncio.to_thread(fn, self.session, *args, **kwargs)


@dataclass
class Context:
    """``info.context`` of every resolver."""

    db: AsyncDB
    settings: Settings
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.db)

