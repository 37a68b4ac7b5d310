"""What one GraphQL request carries: its database session (:class:`~.asyncdb.AsyncDB`),
its settings, its DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from headgraph.api.asyncdb import AsyncDB
from headgraph.api.loaders import Loaders
from headgraph.api.settings import Settings


@dataclass
class Context:
    """``info.context`` of every resolver."""

    db: AsyncDB
    settings: Settings
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.db)

