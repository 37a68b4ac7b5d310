"""Named queries about nodes and their edges: the questions asked most.

Every function takes a :class:`GraphDB` and returns frozen records; ``top`` bounds every
result so no call can return a whole graph by accident. The ``*_of`` functions answer one
question for many nodes in one statement (the API's DataLoaders batch through them); the
single-node functions are thin wrappers over them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import (
    REAL,
    ColumnElement,
    Select,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
)

from headgraph.errors import BadInputError, NodeNotFoundError
from headgraph.queries.models import get_model
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import edge_columns, has_structural_z
from headgraph.schema.tables import edges, nodes

EDGE_KINDS = ("Q", "K", "V", "MLP", "UNEMBED")
NODE_KINDS = ("head", "mlp", "embed", "pos_embed", "unembed")
HEAD_ORDERS: dict[str, ColumnElement | None] = {
    "copying_ratio": nodes.c.copying_ratio,
    "copying_positive_fraction": nodes.c.copying_positive_fraction,
    "ov_norm": nodes.c.ov_norm,
    "qk_norm": nodes.c.qk_norm,
    "layer": None,  # residual-stream order: layer, then head
}
_STREAM_ORDER = {"embed": 0, "pos_embed": 1, "head": 2, "mlp": 2, "unembed": 3}


def check_kind(kind: str) -> str:
    """``kind`` if it is an edge kind (Q, K, V, MLP, UNEMBED); :class:`BadInputError` if not."""
    if kind not in EDGE_KINDS:
        raise BadInputError(f"unknown edge kind {kind!r}; use one of {', '.join(EDGE_KINDS)}.")
    return kind


def check_node_kind(kind: str) -> str:
    """``kind`` if it is a node kind (head, mlp, embed, pos_embed, unembed)."""
    if kind not in NODE_KINDS:
        raise BadInputError(f"unknown node kind {kind!r}; use one of {', '.join(NODE_KINDS)}.")
    return kind


def check_count(name: str, value: int | None) -> int | None:
    """A ``top``/``first`` argument: ``None`` or a non-negative integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise BadInputError(f"{name} must be a non-negative integer, not {value!r}.")
    return value


def stream_key(n: NodeRow) -> tuple[int, int, bool, int]:
    """Residual-stream order: embeddings, then per layer its heads and its MLP, then unembed."""
    return (_STREAM_ORDER[n.kind], n.layer if n.layer is not None else -1, n.kind == "mlp",
            n.head if n.head is not None else -1)


def list_nodes(db: GraphDB, model: ModelRow, kind: str | None = None,
               layer: int | None = None) -> list[NodeRow]:
    """Nodes of a model in residual-stream order, optionally of one kind or layer.

    Examples
    --------
    >>> [n.node for n in list_nodes(db, model, kind="head", layer=1)]  # doctest: +SKIP
    ['L1H0', 'L1H1', 'L1H2', 'L1H3']
    """
    stmt = select(nodes).where(nodes.c.model_id == model.model_id)
    if kind is not None:
        stmt = stmt.where(nodes.c.kind == check_node_kind(kind))
    if layer is not None:
        stmt = stmt.where(nodes.c.layer == layer)
    return sorted((NodeRow.from_row(r) for r in db.rows(stmt)), key=stream_key)


def nodes_named(db: GraphDB, model_id: int, names: Iterable[str]) -> dict[str, NodeRow]:
    """The nodes of one model with these names, by name (missing names are left out).

    All the model's nodes are read once and kept by the reader
    (:class:`~headgraph.queries.lasting.Lasting`: a model's nodes never change): one
    statement per model instead of one per request."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    every = db.lasting.nodes(model_id)
    if every is None:
        stmt = select(nodes).where(nodes.c.model_id == model_id)
        every = {r["node"]: NodeRow.from_row(r) for r in db.rows(stmt, budgeted=False)}
        if every:  # a model being written or gone has none yet: read again next time
            db.lasting.keep_nodes(model_id, every)
    return {n: every[n] for n in wanted if n in every}


def get_node(db: GraphDB, model: ModelRow, name: str) -> NodeRow:
    """One node; :class:`NodeNotFoundError` naming what exists if it is not there."""
    found = nodes_named(db, model.model_id, [name])
    if name not in found:
        raise NodeNotFoundError(
            f"model {model.name!r} has no node {name!r}. Nodes are L{{layer}}H{{head}} "
            f"(layers 0-{model.n_layers - 1}, heads 0-{model.n_heads - 1}), MLP{{layer}}, "
            "EMBED, POS_EMBED, UNEMBED."
        )
    return found[name]


def top_heads(db: GraphDB, model: ModelRow, order_by: str = "copying_ratio",
              descending: bool = True, first: int | None = 10) -> list[NodeRow]:
    """Heads ordered by a metric (e.g. the copying ratio: copying heads first).

    ``order_by="layer"`` gives residual-stream order; heads without the metric come
    last either way; ``first=None`` returns every head.
    """
    if order_by == "role_score":
        raise BadInputError("the order role_score is a role's strength: name the role too "
                            "(heads(role: ..., orderBy: ROLE_SCORE)).")
    if order_by not in HEAD_ORDERS:
        raise BadInputError(f"unknown head order {order_by!r}; use one of "
                            f"{', '.join(HEAD_ORDERS)}.")
    check_count("first", first)
    col = HEAD_ORDERS[order_by]
    stmt = select(nodes).where(and_(nodes.c.model_id == model.model_id, nodes.c.kind == "head"))
    position = (nodes.c.layer.desc(), nodes.c.head.desc()) if descending else (
        nodes.c.layer, nodes.c.head)
    if col is None:
        stmt = stmt.order_by(*position)
    else:
        stmt = stmt.order_by((col.desc() if descending else col.asc()).nulls_last(),
                             nodes.c.layer, nodes.c.head)
    if first is not None:
        stmt = stmt.limit(first)
    return [NodeRow.from_row(r) for r in db.rows(stmt)]


def _edge_lookup(by: str, model_id: int, many: bool, floor: bool, has_z: bool) -> Select:
    """Edges of one model and kind whose ``by`` column (target or source) is one name or
    any of several, optionally with ``score >= min_score`` (compared as REAL); ``z`` read
    only where the model has it (:mod:`headgraph.queries.structural`)."""
    col = edges.c[by]
    # model_id is written into the SQL text (an integer): each model's statement is then
    # prepared on its own (psycopg prepares a statement after five runs) and PostgreSQL
    # prunes to that model's partition once, when it plans, not on every execution; with
    # 31 partitions, 0.04 ms a lookup instead of 0.08 ms.
    cond = [edges.c.model_id == literal_column(str(int(model_id))),
            edges.c.kind == bindparam("kind"),
            col.in_(bindparam("names", expanding=True)) if many else col == bindparam("name")]
    if floor:
        cond.append(edges.c.score >= cast(bindparam("min_score", type_=REAL), REAL))
    return select(*edge_columns(has_z)).where(and_(*cond))


@lru_cache(maxsize=1024)
def _statement(by: str, model_id: int, many: bool, floor: bool, has_z: bool) -> Select:
    """The lookup, built once per model and shape and run with parameters: SQLAlchemy
    then finds it compiled in its cache (a bound ``literal_execute`` model id was compiled
    again on every call, ~0.2 ms; building a Select every call cost ~0.1 ms)."""
    if by == "target":  # feeders: the precomputed rank answers top-k
        return (_edge_lookup("target", model_id, many, floor, has_z)
                .where(edges.c.rank <= bindparam("top")).order_by(edges.c.target, edges.c.rank))
    # readers: the rank among the source's readers of the kind (a score floor keeps a
    # prefix of that order, so it does not change the rank)
    pos = func.row_number().over(partition_by=edges.c.source,
                                 order_by=(edges.c.score.desc(), edges.c.target)).label("pos")
    sub = _edge_lookup("source", model_id, many, floor, has_z).add_columns(pos).subquery()
    return (select(*[sub.c[c.name] for c in edge_columns(has_z)],
                   sub.c.pos.label("reader_rank"))
            .where(sub.c.pos <= bindparam("top")).order_by(sub.c.source, sub.c.pos))


def _lookup(db: GraphDB, key: str, model_id: int, names: Iterable[str], kind: str, top: int,
            min_score: float | None) -> dict[str, list[EdgeRow]]:
    check_kind(kind)
    check_count("top", top)
    wanted = sorted(set(names))
    out: dict[str, list[EdgeRow]] = {n: [] for n in wanted}
    if not wanted or top == 0:
        return out
    many = len(wanted) > 1
    params = {"kind": kind, "top": top, **({"names": wanted} if many else {"name": wanted[0]})}
    if min_score is not None:
        params["min_score"] = min_score
    has_z = has_structural_z(db, model_id)
    for r in db.rows(_statement(key, model_id, many, min_score is not None, has_z), params):
        out[r[key]].append(EdgeRow.from_row(r))
    return out


def feeders_of(db: GraphDB, model_id: int, targets: Iterable[str], kind: str, top: int = 10,
               min_score: float | None = None) -> dict[str, list[EdgeRow]]:
    """For each target, its ``top`` strongest feeders through ``kind`` (rank order).

    One statement for all targets; reads only rows with ``rank <= top`` (edges are
    stored sorted by target, kind, rank; on PostgreSQL a covering index answers).
    """
    return _lookup(db, "target", model_id, targets, kind, top, min_score)


def readers_of(db: GraphDB, model_id: int, sources: Iterable[str], kind: str, top: int = 10,
               min_score: float | None = None) -> dict[str, list[EdgeRow]]:
    """For each source, the ``top`` components that read its write most strongly through
    ``kind`` (score descending, then target name), each with its ``reader_rank`` (1 for the
    strongest reader of that source). One statement for all sources."""
    return _lookup(db, "source", model_id, sources, kind, top, min_score)


def feeders(db: GraphDB, model: ModelRow, target: str, kind: str, top: int = 10,
            min_score: float | None = None) -> list[EdgeRow]:
    """The strongest sources whose write ``target`` reads through ``kind``.

    Examples
    --------
    "Which heads feed L1H2's keys?" is ``feeders(db, model, "L1H2", "K", top=3)``.
    Uses the precomputed ``rank`` column, so it reads ``top`` rows, not all feeders.
    """
    return feeders_of(db, model.model_id, [target], kind, top, min_score)[target]


def readers(db: GraphDB, model: ModelRow, source: str, kind: str, top: int = 10,
            min_score: float | None = None) -> list[EdgeRow]:
    """The components that read ``source``'s write most strongly through ``kind``."""
    return readers_of(db, model.model_id, [source], kind, top, min_score)[source]


def model_and_node(db: GraphDB, model_name: str, node: str) -> tuple[ModelRow, NodeRow]:
    model = get_model(db, model_name)
    return model, get_node(db, model, node)
