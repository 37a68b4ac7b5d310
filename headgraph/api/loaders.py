"""DataLoaders: nested fields of many nodes become one SQL statement per question.

A query such as ``model { nodes { feeders(kind: K, top: 3) { source { name } } } }`` asks
for the feeders of every node. Each ``Node.feeders`` resolver calls ``load(key)``; the
loader collects the keys of one event-loop tick and answers them with one call of the
batched query (:func:`~headgraph.queries.nodes.feeders_of`), grouped by the arguments
that change the SQL (kind, top, minScore). The number of statements of a request thus
grows with the depth of the query, not with the number of nodes. One set of loaders per
request: their caches never outlive it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader

from headgraph.queries.evidence import EdgeEvidence, edge_evidence_of
from headgraph.queries.models import models_by_id
from headgraph.queries.nodes import feeders_of, nodes_named, readers_of
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow, ScoreRow
from headgraph.queries.roles import roles_of
from headgraph.queries.scores import node_scores_of

if TYPE_CHECKING:
    from headgraph.api.asyncdb import AsyncDB

K = TypeVar("K")


@dataclass(frozen=True)
class EdgeAsk:
    """Key of a feeders/readers load: one node, one kind, one top, one threshold."""

    model_id: int
    node: str
    kind: str
    top: int
    min_score: float | None

    @property
    def group(self) -> tuple[int, str, int, float | None]:
        return (self.model_id, self.kind, self.top, self.min_score)


@dataclass(frozen=True)
class ScoreAsk:
    model_id: int
    node: str
    probe: str | None

    @property
    def group(self) -> tuple[int, str | None]:
        return (self.model_id, self.probe)


@dataclass(frozen=True)
class EvidenceAsk:
    """Key of an edge-evidence load: one weight edge (source, target, kind), one probe."""

    model_id: int
    source: str
    target: str
    kind: str
    probe: str | None

    @property
    def edge(self) -> tuple[str, str, str]:
        return (self.source, self.target, self.kind)

    @property
    def group(self) -> tuple[int, str | None]:
        return (self.model_id, self.probe)


@dataclass(frozen=True)
class NodeKey:
    model_id: int
    node: str

    @property
    def group(self) -> int:
        return self.model_id


def _groups(keys: Iterable[K], group: Callable[[K], Hashable]) -> dict[Hashable, list[K]]:
    out: dict[Hashable, list[K]] = defaultdict(list)
    for key in keys:
        out[group(key)].append(key)
    return out


class Loaders:
    """The request's loaders: ``model`` (by id), ``node`` (by :class:`NodeKey`, ``None``
    when absent), ``feeders`` and ``readers`` (by :class:`EdgeAsk`), ``scores`` and
    ``roles`` (by :class:`ScoreAsk`), ``evidence`` (by :class:`EvidenceAsk`)."""

    def __init__(self, db: AsyncDB) -> None:
        self._db = db
        self.model: DataLoader[int, ModelRow] = DataLoader(self._models)
        self.node: DataLoader[NodeKey, NodeRow | None] = DataLoader(self._nodes)
        self.feeders: DataLoader[EdgeAsk, list[EdgeRow]] = DataLoader(self._feeders)
        self.readers: DataLoader[EdgeAsk, list[EdgeRow]] = DataLoader(self._readers)
        self.scores: DataLoader[ScoreAsk, list[ScoreRow]] = DataLoader(self._scores)
        self.roles: DataLoader[ScoreAsk, list[str]] = DataLoader(self._roles)
        self.evidence: DataLoader[EvidenceAsk, list[EdgeEvidence]] = DataLoader(self._evidence)

    def known_nodes(self, rows: Iterable[NodeRow]) -> None:
        """Remember nodes already read, so edges that point at them cost no SQL."""
        self.node.prime_many({NodeKey(r.model_id, r.node): r for r in rows})

    def known_model(self, row: ModelRow) -> None:
        self.model.prime(row.model_id, row)

    async def _models(self, ids: list[int]) -> Sequence[ModelRow]:
        found = await self._db.lookup(models_by_id, ids)
        return [found[i] for i in ids]

    async def _nodes(self, keys: list[NodeKey]) -> Sequence[NodeRow | None]:
        found: dict[NodeKey, NodeRow] = {}
        for model_id, group in _groups(keys, lambda k: k.group).items():
            rows = await self._db.lookup(nodes_named, model_id, [k.node for k in group])
            found.update({NodeKey(model_id, name): row for name, row in rows.items()})
        return [found.get(k) for k in keys]

    async def _edges(self, fn: Any, keys: list[EdgeAsk]) -> Sequence[list[EdgeRow]]:
        found: dict[EdgeAsk, list[EdgeRow]] = {}
        for (model_id, kind, top, min_score), group in _groups(keys, lambda k: k.group).items():
            names = [k.node for k in group]
            # in a worker thread on every backend: ~1 ms of CPU on DuckDB, a wait on the
            # network on PostgreSQL (never on the event loop: a stalled server would hold it)
            rows = await self._db.run(fn, model_id, names, kind, top, min_score)
            found.update({k: rows[k.node] for k in group})
        return [found[k] for k in keys]

    async def _feeders(self, keys: list[EdgeAsk]) -> Sequence[list[EdgeRow]]:
        return await self._edges(feeders_of, keys)

    async def _readers(self, keys: list[EdgeAsk]) -> Sequence[list[EdgeRow]]:
        return await self._edges(readers_of, keys)

    async def _scores(self, keys: list[ScoreAsk]) -> Sequence[list[ScoreRow]]:
        found: dict[ScoreAsk, list[ScoreRow]] = {}
        for (model_id, probe), group in _groups(keys, lambda k: k.group).items():
            rows = await self._db.run(node_scores_of, model_id, [k.node for k in group], probe)
            found.update({k: rows[k.node] for k in group})
        return [found[k] for k in keys]

    async def _roles(self, keys: list[ScoreAsk]) -> Sequence[list[str]]:
        found: dict[ScoreAsk, list[str]] = {}
        for (model_id, probe), group in _groups(keys, lambda k: k.group).items():
            rows = await self._db.run(roles_of, model_id, [k.node for k in group], probe)
            found.update({k: [r.role for r in rows[k.node]] for k in group})
        return [found[k] for k in keys]

    async def _evidence(self, keys: list[EvidenceAsk]) -> Sequence[list[EdgeEvidence]]:
        found: dict[EvidenceAsk, list[EdgeEvidence]] = {}
        for (model_id, probe), group in _groups(keys, lambda k: k.group).items():
            rows = await self._db.run(edge_evidence_of, model_id, [k.edge for k in group],
                                      probe)
            found.update({k: rows[k.edge] for k in group})
        return [found[k] for k in keys]
