"""Views of one stored model and one node: what GraphQL's ``Model`` and ``Node`` answer,
as Python calls that return :class:`~headgraph.notebook.rows.Rows` of frozen records.

Every call opens the database for its own duration (a DuckDB file is held only while a
call runs, so an ingest can write between calls) and reads through the same named queries
and graph functions as the API (:mod:`headgraph.queries`, :mod:`headgraph.api.graph_ops`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from headgraph.api.graph_ops import PathAsk, UpstreamCircuit, circuit_of, find_paths
from headgraph.notebook.rows import Rows
from headgraph.queries.circuits import CircuitRow, list_circuits
from headgraph.queries.edges import EdgeKey, EdgePage, count_edges, edge_page
from headgraph.queries.evidence import EdgeEvidence, edge_evidence_of
from headgraph.queries.gaps import EvidenceGap, evidence_gaps
from headgraph.queries.nodes import feeders, get_node, list_nodes, readers, top_heads
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow, ScoreRow
from headgraph.queries.roles import RoleRecord, heads_in_role, roles_of
from headgraph.queries.scores import node_scores_of
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import StructuralNullInfo, structural_null_of
from headgraph.queries.summary import ModelSummary, summarize
from headgraph.queries.virtual import VirtualHeadRow, virtual_heads_of

if TYPE_CHECKING:
    import networkx as nx
    from matplotlib.figure import Figure

    from headgraph.graph.paths import Path

T = TypeVar("T")


def in_session(db: GraphDB, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(session, ...)`` in one read session of ``db``."""
    with db.session() as session:
        return fn(session, *args, **kwargs)


@dataclass(frozen=True)
class Circuit:
    """A node's upstream circuit: every edge that reaches it within a few hops."""

    root: str
    nodes: tuple[str, ...]
    edges: Rows[EdgeRow]
    truncated: bool  # max_edges cut it (the strongest edges are kept)

    @classmethod
    def of(cls, c: UpstreamCircuit) -> Circuit:
        return cls(c.root, c.nodes, Rows(c.edges), c.truncated)

    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes and edges (key = kind; score, baseline, null_std, z, gaussian_z, rank as
        attributes)."""
        import networkx as nx

        g = nx.MultiDiGraph(root=self.root, truncated=self.truncated)
        g.add_nodes_from(self.nodes)
        for e in self.edges:
            g.add_edge(e.source, e.target, key=e.kind, kind=e.kind, score=e.score,
                       baseline=e.baseline, null_std=e.null_std, z=e.z,
                       gaussian_z=e.gaussian_z, rank=e.rank)
        return g

    def to_pandas(self):
        return self.edges.to_pandas()


class Edges:
    """All edges of a model (of one kind, above a score, at or above a structural z),
    strongest first: iterate it for every edge, a page at a time underneath; ``len()``
    counts them in the database."""

    def __init__(self, db: GraphDB, model: ModelRow, kind: str | None,
                 min_score: float | None, page_size: int, min_z: float | None = None) -> None:
        self._db, self._model = db, model
        self.kind, self.min_score, self.page_size = kind, min_score, page_size
        self.min_z = min_z
        self._filters = {"kind": kind, "min_score": min_score, "min_z": min_z}

    def page(self, first: int, after: EdgeKey | None = None) -> EdgePage:
        """One page of ``first`` edges after edge ``after`` (pass ``page.end`` for the next
        page; ``page.has_next`` says whether one follows)."""
        return in_session(self._db, edge_page, self._model.model_id, first=first, after=after,
                          **self._filters)

    def pages(self) -> Iterator[Rows[EdgeRow]]:
        """Each page in turn (keyset pagination: a page costs the same wherever it is)."""
        after: EdgeKey | None = None
        while True:
            page = in_session(self._db, edge_page, self._model.model_id,
                              first=self.page_size, after=after, **self._filters)
            yield Rows(page.rows)
            if not page.has_next:
                return
            after = page.end

    def __iter__(self) -> Iterator[EdgeRow]:
        for page in self.pages():
            yield from page

    def __len__(self) -> int:
        return in_session(self._db, count_edges, self._model.model_id, **self._filters)

    def head(self, n: int = 10) -> Rows[EdgeRow]:
        """The ``n`` strongest."""
        return Rows(in_session(self._db, edge_page, self._model.model_id, first=n,
                               **self._filters).rows)

    def to_pandas(self):
        """Every edge as a DataFrame (all pages: mind the size of big models)."""
        return Rows(self).to_pandas()


@dataclass(frozen=True)
class NodeView:
    """One node of a stored model; ``row`` holds its stored metrics (``Node`` in GraphQL)."""

    db: GraphDB
    model: ModelRow
    row: NodeRow

    @property
    def name(self) -> str:
        return self.row.node

    def feeders(self, kind: str, top: int = 10, min_score: float | None = None
                ) -> Rows[EdgeRow]:
        """The strongest sources this node reads through ``kind`` (Q, K, V, MLP, UNEMBED)."""
        return Rows(in_session(self.db, feeders, self.model, self.row.node, kind, top, min_score))

    def readers(self, kind: str, top: int = 10, min_score: float | None = None
                ) -> Rows[EdgeRow]:
        """The components that read this node's write most strongly through ``kind``."""
        return Rows(in_session(self.db, readers, self.model, self.row.node, kind, top, min_score))

    def scores(self, probe: str | None = None) -> Rows[ScoreRow]:
        """Evidence rows about this node (of one probe if given)."""
        found = in_session(self.db, node_scores_of, self.model.model_id, [self.row.node], probe)
        return Rows(found[self.row.node])

    def roles(self, probe: str | None = None) -> Rows[RoleRecord]:
        """The roles it plays, each with the number that earned it."""
        found = in_session(self.db, roles_of, self.model.model_id, [self.row.node], probe)
        return Rows(found[self.row.node])

    def evidence(self, source: str, kind: str, probe: str | None = None
                 ) -> Rows[EdgeEvidence]:
        """Causal evidence on the edge ``source -kind-> this node`` (path patching,
        discovered circuits)."""
        key = (source, self.row.node, kind)
        found = in_session(self.db, edge_evidence_of, self.model.model_id, [key], probe)
        return Rows(found.get(key, []))

    def circuit(self, depth: int = 2, kinds: tuple[str, ...] | None = None,
                min_score: float | None = None, max_edges: int = 5000) -> Circuit:
        """Everything that reaches this node within ``depth`` hops through ``kinds``."""
        return Circuit.of(in_session(self.db, circuit_of, self.model, self.row.node, depth=depth,
                                kinds=kinds, min_score=min_score, max_edges=max_edges))

    def __repr__(self) -> str:
        return f"<node {self.row.node} of {self.model.name}>"


@dataclass(frozen=True)
class ModelView:
    """One stored model; ``row`` holds its shape and provenance (``Model`` in GraphQL)."""

    db: GraphDB
    row: ModelRow

    @property
    def name(self) -> str:
        return self.row.name

    def node(self, name: str) -> NodeView:
        return NodeView(self.db, self.row, in_session(self.db, get_node, self.row, name))

    def nodes(self, kind: str | None = None, layer: int | None = None) -> Rows[NodeRow]:
        """Nodes in residual-stream order, optionally of one kind or layer."""
        return Rows(in_session(self.db, list_nodes, self.row, kind, layer))

    def heads(self, order_by: str = "layer", descending: bool | None = None,
              first: int | None = None, role: str | None = None) -> Rows[NodeRow]:
        """Heads in residual-stream order, or by a metric (``"copying_ratio"``..., highest
        first unless ``descending=False``); only those playing ``role`` if given."""
        down = (order_by != "layer") if descending is None else descending
        if role is not None:
            return Rows(in_session(self.db, heads_in_role, self.row, role, order_by, down, first))
        return Rows(in_session(self.db, top_heads, self.row, order_by, down, first))

    def roles(self, probe: str | None = None) -> Rows[RoleRecord]:
        """Every role every head plays, each with the number that earned it."""
        names = [n.node for n in self.nodes("head")]
        found = in_session(self.db, roles_of, self.row.model_id, names, probe)
        return Rows(r for name in names for r in found.get(name, []))

    def edges(self, kind: str | None = None, min_score: float | None = None,
              page_size: int = 1000, min_z: float | None = None) -> Edges:
        """Every edge, strongest first (iterate it; ``.head(n)``; ``.to_pandas()``); with
        ``min_z`` only those at or above that structural z (``min_z=3``: above what the
        model's structure explains)."""
        return Edges(self.db, self.row, kind, min_score, page_size, min_z)

    def paths(self, target: str, source: str | None = None, *,
              kinds: tuple[str, ...] | None = None, pattern: tuple[str, ...] | None = None,
              max_length: int = 3, top: int = 10, min_score: float | None = None,
              weight: str = "score", rank_by: str = "product") -> Rows[Path]:
        """The ``top`` strongest chains of edges into ``target``, ranked exactly (see
        :func:`headgraph.graph.paths.top_paths`)."""
        ask = PathAsk(target=target, source=source, kinds=kinds, pattern=pattern,
                      max_length=max_length, top=top, min_score=min_score, weight=weight,
                      rank_by=rank_by)
        return Rows(in_session(self.db, find_paths, self.row, ask))

    def summary(self) -> ModelSummary:
        """The findings a researcher looks for first, each with its evidence (print it, or
        read its fields; ``Model.summary``, ``headgraph summary``)."""
        return in_session(self.db, summarize, self.row)

    def structural_null(self) -> StructuralNullInfo | None:
        """The null its edges' z is measured against: bands and calibration per kind and
        family (``None`` for a model ingested before headgraph stored it)."""
        return in_session(self.db, structural_null_of, self.row)

    def virtual_heads(self, length: int | None = None, top: int = 10) -> Rows[VirtualHeadRow]:
        """The strongest stored virtual heads (V-composition chains scored exactly)."""
        return Rows(in_session(self.db, virtual_heads_of, self.row.model_id, length=length,
                          top=top))

    def circuits(self, tool: str | None = None, task: str | None = None) -> Rows[CircuitRow]:
        """The imported discovered circuits (ACDC, auto-circuit, EAP-IG) of this model."""
        return Rows(in_session(self.db, list_circuits, self.row, tool, task))

    def evidence_gaps(self, kind: str | None = None, top: int = 10, *,
                      tool: str | None = None, task: str | None = None, min_z: float = 3.0,
                      max_z: float = 1.0) -> Rows[EvidenceGap]:
        """Where discovered circuits and weights disagree (``Model.evidenceGaps``)."""
        return Rows(in_session(self.db, evidence_gaps, self.row, kind, top, tool=tool, task=task,
                          min_z=min_z, max_z=max_z))

    def to_networkx(self, kinds: tuple[str, ...] = ("Q", "K", "V"),
                    min_score: float | None = None, top_per_target: int | None = None
                    ) -> nx.MultiDiGraph:
        """The model's graph: nodes with their metrics, roles and drawing position (``x``,
        ``y``), edges keyed by kind with score, baseline, null_std, z and rank; the same
        records as the JSON export (:mod:`headgraph.graph.export`)."""
        import io
        import json

        import networkx as nx

        from headgraph.graph.export import ExportFilter, write_export

        out = io.StringIO()
        flt = ExportFilter(kinds=kinds, min_score=min_score, top_per_target=top_per_target)
        in_session(self.db, write_export, self.row.name, "json", out, flt)
        return nx.node_link_graph(json.loads(out.getvalue()), directed=True, multigraph=True,
                                  edges="edges")

    def plot(self, kind: str = "K") -> Figure:
        """A figure: the head x head ``kind``-composition heatmap coloured by z (Q, K, V),
        or every head's copying ratio (``"COPYING"``)."""
        from headgraph.graph.plot import composition_figure, copying_figure

        if kind.upper() == "COPYING":
            return in_session(self.db, copying_figure, self.row.name)
        return in_session(self.db, composition_figure, self.row.name, kind.upper())

    def __repr__(self) -> str:
        r = self.row
        return (f"<model {r.name}: {r.architecture}, {r.n_layers} layers x {r.n_heads} heads, "
                f"{r.n_edges:,} edges>")
