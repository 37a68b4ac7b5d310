"""Attribution graphs in a notebook: ``db.graph(slug, model=...)`` on a database opened with
``headgraph.open`` (:mod:`headgraph.notebook`), with views as pandas DataFrames and networkx
graphs.

>>> db = headgraph.open("headgraph.duckdb")                              # doctest: +SKIP
>>> g = db.graph("gemma-dollar")                                         # doctest: +SKIP
>>> v = g.view(node_threshold=0.5)          # Neuronpedia's slider at 0.5  # doctest: +SKIP
>>> v.nodes().sort_values("influence").head()                            # doctest: +SKIP
>>> nx_graph = g.neighbourhood("27_22605_10", depth=2).to_networkx()     # doctest: +SKIP

Each call holds the database only while it runs (as every call of the Python API does).
Views are :mod:`headgraph.attribution.views` (``prune="influence"`` or ``"recompute"``),
neighbourhoods :mod:`headgraph.attribution.neighbourhood`; the frames carry every field a
GraphQL view does, nodes keyed by ``key`` (the node id, or ``id@position`` where two
nodes share it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headgraph.attribution.export import write_graph, write_view
from headgraph.attribution.graphs import GraphRow, GraphSlice, get_graph, graph_nodes, list_graphs
from headgraph.attribution.neighbourhood import neighbourhood
from headgraph.attribution.pruning import ROLE_NAMES
from headgraph.attribution.views import ViewAsk, default_rule, graph_view
from headgraph.queries.session import GraphDB

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

NODE_COLUMNS = ("key", "node_id", "layer", "ctx_idx", "feature", "feature_type", "clerp",
                "activation", "influence", "recomputed_influence",
                "recomputed_cumulative_influence", "role", "pinned")
LINK_COLUMNS = ("source", "target", "source_key", "target_key", "weight", "edge_influence")


@dataclass(frozen=True)
class GraphFrames:
    """A view or neighbourhood of a graph: :meth:`nodes` and :meth:`links` as DataFrames,
    :meth:`to_networkx`, :meth:`to_json` (Neuronpedia's graph JSON, as the server sends)."""

    view: GraphSlice
    pinned: frozenset[int]

    @property
    def params(self) -> dict[str, Any]:
        """What the view is (``prune``, thresholds, pinned, ``around``...)."""
        return dict(self.view.params)

    @property
    def truncated(self) -> bool:
        return self.view.truncated

    def node_records(self) -> list[dict[str, Any]]:
        out = []
        for n in self.view.nodes:
            f = n.fields
            out.append({"key": n.key, "node_id": n.node_id, "layer": f.get("layer"),
                        "ctx_idx": f.get("ctx_idx"), "feature": f.get("feature"),
                        "feature_type": f.get("feature_type"), "clerp": f.get("clerp"),
                        "activation": f.get("activation"), "influence": n.influence,
                        "recomputed_influence": n.score,
                        "recomputed_cumulative_influence": n.cum,
                        "role": ROLE_NAMES[n.role], "pinned": n.nid in self.pinned})
        return out

    def link_records(self) -> list[dict[str, Any]]:
        keyed = self.view.link_records(keys=True)
        return [{"source": x.source, "target": x.target, "source_key": k.source,
                 "target_key": k.target, "weight": x.weight, "edge_influence": x.edge_score}
                for x, k in zip(self.view.link_records(), keyed, strict=True)]

    def nodes(self) -> pd.DataFrame:
        """One row per node, in file order (columns :data:`NODE_COLUMNS`)."""
        import pandas as pd

        return pd.DataFrame(self.node_records(), columns=list(NODE_COLUMNS))

    def links(self) -> pd.DataFrame:
        """One row per link (columns :data:`LINK_COLUMNS`)."""
        import pandas as pd

        return pd.DataFrame(self.link_records(), columns=list(LINK_COLUMNS))

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` on node keys, nodes and links with every column as
        attributes (``weight`` on each edge)."""
        import networkx as nx

        g = nx.DiGraph(**self.params)
        for row in self.node_records():
            g.add_node(row["key"], **{k: v for k, v in row.items() if k != "key"})
        for row in self.link_records():
            g.add_edge(row["source_key"], row["target_key"],
                       **{k: v for k, v in row.items() if k not in ("source_key", "target_key")})
        return g

    def to_json(self) -> str:
        """The view as Neuronpedia graph JSON (what ``/graphs/...json?...`` answers)."""
        out = io.StringIO()
        write_view(self.view, out)
        return out.getvalue()


class AttributionGraph:
    """One imported attribution graph (``db.graph(slug, model=...)``)."""

    def __init__(self, db: GraphDB, row: GraphRow) -> None:
        self._db = db
        self.row = row

    slug = property(lambda self: self.row.slug)
    model = property(lambda self: self.row.model)
    prompt = property(lambda self: self.row.prompt)
    pinned_ids = property(lambda self: self.row.pinned_ids)
    node_threshold = property(lambda self: self.row.node_threshold)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.row.header.get("metadata") or {})

    @property
    def default_prune(self) -> str:
        """``influence`` (files that store it) or ``recompute``."""
        with self._db.session() as db:
            return default_rule(graph_nodes(db, self.row))

    def view(self, prune: str | None = None, node_threshold: float | None = None,
             edge_threshold: float | None = None, pinned: tuple[str, ...] | list[str] = (),
             clicked: str | None = None, max_links: int | None = None) -> GraphFrames:
        """The pruned view (:func:`headgraph.attribution.views.graph_view`)."""
        ask = ViewAsk(prune, node_threshold, edge_threshold, tuple(pinned), clicked)
        with self._db.session() as db:
            view = graph_view(db, self.slug, ask, model=self.model, max_links=max_links)
            return GraphFrames(view, self._pinned(db, pinned))

    def neighbourhood(self, node: str, top: int = 10, depth: int = 1,
                      direction: str = "both") -> GraphFrames:
        """The links around ``node`` (a node id, or a key where ids are shared)."""
        with self._db.session() as db:
            view = neighbourhood(db, self.slug, node, top=top, depth=depth,
                                 direction=direction, model=self.model)
            return GraphFrames(view, self._pinned(db, ()))

    def to_json(self) -> str:
        """The whole graph as imported (Neuronpedia graph JSON, the file's ids)."""
        out = io.StringIO()
        with self._db.session() as db:
            write_graph(db, self.slug, out, self.model)
        return out.getvalue()

    def _pinned(self, db: GraphDB, asked: tuple[str, ...] | list[str]) -> frozenset[int]:
        return frozenset(graph_nodes(db, self.row).nids_of([*self.row.pinned_ids, *asked]))

    def __repr__(self) -> str:
        return (f"AttributionGraph({self.model!r}, {self.slug!r}: {self.row.n_nodes:,} nodes, "
                f"{self.row.n_links:,} links)")


def open_graph(db: GraphDB, slug: str, model: str | None = None) -> AttributionGraph:
    """The graph ``slug`` (of ``model``, needed only when several models have the slug)."""
    with db.session() as session:
        return AttributionGraph(db, get_graph(session, slug, model))


def graphs(db: GraphDB, model: str | None = None, prompt: str | None = None) -> list[GraphRow]:
    """Stored graphs, by model and slug (of one ``model``; ``prompt`` a substring)."""
    with db.session() as session:
        return list_graphs(session, model, prompt)
