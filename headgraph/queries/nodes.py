"""Named queries about nodes and their edges: the questions asked most.

Every function takes a :class:`GraphDB` and returns frozen records; ``top`` bounds every
result so no call can return a whole graph by accident.
"""

from __future__ import annotations

from sqlalchemy import and_, select

from headgraph.errors import BadInputError, NodeNotFoundError
from headgraph.queries.models import get_model
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import edges, nodes

EDGE_KINDS = ("Q", "K", "V", "MLP", "UNEMBED")
HEAD_ORDERS = {
    "copying_ratio": nodes.c.copying_ratio,
    "copying_positive_fraction": nodes.c.copying_positive_fraction,
    "ov_norm": nodes.c.ov_norm,
    "qk_norm": nodes.c.qk_norm,
}


def check_kind(kind: str) -> str:
    if kind not in EDGE_KINDS:
        raise BadInputError(f"unknown edge kind {kind!r}; use one of {', '.join(EDGE_KINDS)}.")
    return kind


def list_nodes(db: GraphDB, model: ModelRow, kind: str | None = None,
               layer: int | None = None) -> list[NodeRow]:
    """Nodes of a model in residual-stream order, optionally of one kind or layer."""
    stmt = select(nodes).where(nodes.c.model_id == model.model_id)
    if kind is not None:
        stmt = stmt.where(nodes.c.kind == kind)
    if layer is not None:
        stmt = stmt.where(nodes.c.layer == layer)
    rows = [NodeRow.from_row(r) for r in db.rows(stmt)]
    order = {"embed": 0, "pos_embed": 1, "head": 2, "mlp": 2, "unembed": 3}
    return sorted(rows, key=lambda n: (order[n.kind], n.layer if n.layer is not None else -1,
                                       n.kind == "mlp", n.head if n.head is not None else -1))


def get_node(db: GraphDB, model: ModelRow, name: str) -> NodeRow:
    """One node; :class:`NodeNotFoundError` naming what exists if it is not there."""
    rows = db.rows(select(nodes).where(and_(nodes.c.model_id == model.model_id,
                                            nodes.c.node == name)))
    if not rows:
        raise NodeNotFoundError(
            f"model {model.name!r} has no node {name!r}. Nodes are L{{layer}}H{{head}} "
            f"(layers 0-{model.n_layers - 1}, heads 0-{model.n_heads - 1}), MLP{{layer}}, "
            "EMBED, POS_EMBED, UNEMBED."
        )
    return NodeRow.from_row(rows[0])


def top_heads(db: GraphDB, model: ModelRow, order_by: str = "copying_ratio",
              descending: bool = True, first: int = 10) -> list[NodeRow]:
    """Heads ordered by a metric (e.g. the copying ratio: copying heads first)."""
    if order_by not in HEAD_ORDERS:
        raise BadInputError(f"unknown head order {order_by!r}; use one of "
                            f"{', '.join(HEAD_ORDERS)}.")
    col = HEAD_ORDERS[order_by]
    stmt = (
        select(nodes)
        .where(and_(nodes.c.model_id == model.model_id, nodes.c.kind == "head"))
        .order_by(col.desc() if descending else col.asc(), nodes.c.layer, nodes.c.head)
        .limit(first)
    )
    return [NodeRow.from_row(r) for r in db.rows(stmt)]


def feeders(db: GraphDB, model: ModelRow, target: str, kind: str, top: int = 10,
            min_score: float | None = None) -> list[EdgeRow]:
    """The strongest sources whose write ``target`` reads through ``kind``.

    Examples
    --------
    "Which heads feed L1H2's keys?" is ``feeders(db, model, "L1H2", "K", top=3)``.
    Uses the precomputed ``rank`` column, so it reads ``top`` rows, not all feeders.
    """
    check_kind(kind)
    stmt = (
        select(edges)
        .where(and_(edges.c.model_id == model.model_id, edges.c.target == target,
                    edges.c.kind == kind, edges.c.rank <= top))
        .order_by(edges.c.rank)
    )
    if min_score is not None:
        stmt = stmt.where(edges.c.score >= min_score)
    return [EdgeRow.from_row(r) for r in db.rows(stmt)]


def readers(db: GraphDB, model: ModelRow, source: str, kind: str, top: int = 10,
            min_score: float | None = None) -> list[EdgeRow]:
    """The components that read ``source``'s write most strongly through ``kind``."""
    check_kind(kind)
    stmt = (
        select(edges)
        .where(and_(edges.c.model_id == model.model_id, edges.c.source == source,
                    edges.c.kind == kind))
        .order_by(edges.c.score.desc(), edges.c.target)
        .limit(top)
    )
    if min_score is not None:
        stmt = stmt.where(edges.c.score >= min_score)
    return [EdgeRow.from_row(r) for r in db.rows(stmt)]


def model_and_node(db: GraphDB, model_name: str, node: str) -> tuple[ModelRow, NodeRow]:
    model = get_model(db, model_name)
    return model, get_node(db, model, node)
