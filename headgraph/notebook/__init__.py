"""The Python API for notebooks and scripts: ``headgraph.open(db)``.

It reaches what the GraphQL API does, through the same queries:

>>> g = headgraph.open("headgraph.duckdb")                                  # doctest: +SKIP
>>> toy = g.model("toy")                                                    # doctest: +SKIP
>>> toy.node("L1H2").feeders("K", top=3).to_pandas()[["source", "score", "z", "gaussian_z"]]
... # doctest: +SKIP
  source     score         z  gaussian_z
0   L0H2  0.248183  7.793512   18.708777
...
>>> toy.paths("L1H2", kinds=("V", "K"), top=4)                              # doctest: +SKIP
>>> toy.heads(role="induction"), toy.virtual_heads(top=5), toy.roles()      # doctest: +SKIP
>>> print(toy.summary())            # the first findings, weights beside evidence  # doctest: +SKIP
>>> toy.node("L1H2").circuit(depth=2).to_networkx()                         # doctest: +SKIP
>>> toy.to_networkx(kinds=("K",)), toy.plot("K")                            # doctest: +SKIP
>>> g.compare("toy@0", "toy").changed_edges(top=5)                          # doctest: +SKIP
>>> g.series("toy", source="L0H2", target="L1H2", kind="K").to_pandas()     # doctest: +SKIP

Lists are :class:`~headgraph.notebook.rows.Rows` (``list`` plus ``to_pandas()`` with every
field, ``z`` included); a model's edges iterate page by page (:class:`~.views.Edges`);
circuits and models turn into networkx graphs; plots are matplotlib figures. Each call
holds the DuckDB file only while it runs, so an ingest can write between calls (a call
during an ingest raises :class:`~headgraph.errors.DatabaseLockedError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headgraph.api.graph_ops import changed_edges, compare_models
from headgraph.notebook.rows import Rows
from headgraph.notebook.views import Circuit, Edges, ModelView, NodeView, in_session
from headgraph.queries.models import get_model, list_models
from headgraph.queries.nodes import get_node
from headgraph.queries.records import ModelRow
from headgraph.queries.series import SeriesPoint, series
from headgraph.queries.session import GraphDB, open_reader

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from headgraph.graph.compare import Comparison as ComparisonRecord
    from headgraph.graph.compare import EdgeChange, HeadMatch

__all__ = ["Circuit", "Comparison", "Edges", "Graph", "ModelView", "NodeView", "Rows",
           "Series", "open_graph"]


@dataclass(frozen=True)
class Comparison:
    """Two models' heads matched one-to-one, and the edges that changed (``Query.compare``)."""

    db: GraphDB
    record: ComparisonRecord

    @property
    def note(self) -> str:
        return self.record.note

    @property
    def matches(self) -> Rows[HeadMatch]:
        """Head pairs, most similar first."""
        return Rows(self.record.matches)

    def changed_edges(self, top: int = 20, kinds: tuple[str, ...] = ("Q", "K", "V"),
                      present_z: float = 3.0, heads_only: bool = True) -> Rows[EdgeChange]:
        """The ``top`` edges whose score changed most under the matching."""
        return Rows(in_session(self.db, changed_edges, self.record, top=top, kinds=kinds,
                          present_z=present_z, heads_only=heads_only))

    def __repr__(self) -> str:
        return f"<comparison {self.record.a.name} vs {self.record.b.name}: {self.note}>"


class Series(Rows[SeriesPoint]):
    """A metric across the checkpoints of a family (``Query.series``), with :meth:`plot`."""

    def __init__(self, points, what: str, family: str) -> None:
        super().__init__(points)
        self.what, self.family = what, family

    def plot(self) -> Figure:
        """The series over training steps, as a figure."""
        from headgraph.graph.plot import series_figure

        return series_figure(list(self), self.what, self.family)


class Graph:
    """A headgraph database opened read-only (see :func:`open_graph`)."""

    def __init__(self, db: GraphDB) -> None:
        self.db = db

    def models(self, family: str | None = None) -> Rows[ModelRow]:
        return Rows(in_session(self.db, list_models, family))

    def model(self, name: str) -> ModelView:
        return ModelView(self.db, in_session(self.db, get_model, name))

    def node(self, model: str, name: str) -> NodeView:
        """``g.node("toy", "L1H2")``: one node of one model."""
        with self.db.session() as db:
            row = get_model(db, model)
            return NodeView(self.db, row, get_node(db, row, name))

    def compare(self, a: str, b: str, min_similarity: float = 0.0, match_by: str = "auto"
                ) -> Comparison:
        """Match the heads of models ``a`` and ``b`` (by name for checkpoints of one run,
        by signature otherwise) and diff their edges."""
        return Comparison(self.db, in_session(self.db, compare_models, a, b, min_similarity,
                                         match_by))

    def series(self, family: str, *, node: str | None = None, source: str | None = None,
               target: str | None = None, kind: str | None = None,
               metric: str | None = None) -> Series:
        """A node metric (``node=``) or an edge metric (``source=, target=, kind=``) across
        the checkpoints of ``family``, by step."""
        from headgraph.graph.plot import series_label

        points = in_session(self.db, series, family, node=node, source=source, target=target,
                       kind=kind, metric=metric)
        return Series(points, series_label(node, source, target, kind, metric), family)

    def graph(self, slug: str, model: str | None = None):
        """``g.graph("gemma-dollar")``: an imported attribution graph, with views as
        DataFrames and networkx (:mod:`headgraph.attribution.notebook`); ``model`` is
        needed only when graphs of several models share the slug."""
        from headgraph.attribution.notebook import open_graph

        return open_graph(self.db, slug, model)

    def graphs(self, model: str | None = None, prompt: str | None = None):
        """The imported attribution graphs (rows with slug, model, prompt, counts)."""
        from headgraph.attribution.notebook import graphs

        return graphs(self.db, model, prompt)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"headgraph.Graph({str(self.db.target)!r})"


def open_graph(db: str | os.PathLike[str] | None = None) -> Graph:
    """Open a database (DuckDB path or URL; default ``$HEADGRAPH_DB``) for reading."""
    return Graph(open_reader(db, release=True))
