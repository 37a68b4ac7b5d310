"""What one GraphQL request carries: its database session (:class:`~.asyncdb.AsyncDB`),
its settings, its DataLoaders, its cost estimate and what its large values have used of
``max_response_bytes``."""

from __future__ import annotations

from dataclasses import dataclass, field

from headgraph.api.asyncdb import AsyncDB
from headgraph.api.loaders import Loaders
from headgraph.api.pacing import Pace
from headgraph.api.settings import Settings
from headgraph.errors import LimitExceededError


@dataclass
class Context:
    """``info.context`` of every resolver."""

    db: AsyncDB
    settings: Settings
    loaders: Loaders = field(init=False)
    cost: int = 0
    """The query's cost estimate (:mod:`headgraph.api.cost`), set when it was admitted."""
    charged: int = 0
    """Bytes of large values (JSON objects, prompts) resolved so far."""
    pace: Pace = field(default_factory=Pace)
    """The request's pacing and its deadline's mark (:mod:`headgraph.api.pacing`)."""
    database_sizes: dict[str, int] | None = None
    """The database's sizes for the cost estimate
    (:func:`headgraph.queries.models.database_sizes`), ``None`` when not known yet."""

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.db)

    def charge(self, n_bytes: int, what: str) -> None:
        """Count a large value against ``max_response_bytes`` before it joins the answer:
        thirty aliases of a graph's 30 MB metadata stop at the first that does not fit,
        instead of building a gigabyte and refusing it at the end."""
        self.charged += n_bytes
        limit = self.settings.max_response_bytes
        if limit and self.charged > limit:
            raise LimitExceededError(
                f"{what} would take this answer past this server's limit of {limit:,} bytes "
                "(max_response_bytes); ask for it in fewer places, or for less.")
