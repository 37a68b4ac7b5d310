"""The neighbourhood of one node of an attribution graph: up to ``top`` in-links
(strongest ``|weight|``) of every node reached upstream and ``top`` out-links of every
node reached downstream, ``depth`` hops each way. Each hop is one SQL statement for both
directions: in-links come from ``attribution_links`` (stored by target) and out-links
from ``attribution_out_links`` (stored by source), ranked per node with ``row_number()``
over a zone-mapped range, so the cost follows the answer, not the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from sqlalchemy import Select, and_, func, literal, select, union_all

from headgraph.errors import BadInputError, LimitExceededError
from headgraph.queries.attribution import (
    GraphRow,
    GraphView,
    _in_file_order,
    _node_records,
    fetch_arrow,
    graph_and_node,
)
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

DIRECTIONS = ("in", "out", "both")
MAX_DEPTH = 4
MAX_TOP = 100


def _ranked(graph: GraphRow, frontier: Sequence[int], inward: bool, top: int) -> Select:
    """Up to ``top`` links (largest ``|weight|``) into (``inward``) or out of each node."""
    table = t.attribution_links if inward else t.attribution_out_links
    c = table.c
    key = c.target if inward else c.source
    ranked = select(c.idx, c.source, c.target, c.weight, func.row_number().over(
        partition_by=key, order_by=(func.abs(c.weight).desc(), c.idx)).label("r")).where(
        and_(c.graph_id == graph.graph_id, key.in_([int(x) for x in frontier]))).subquery()
    return select(ranked.c.idx, ranked.c.source, ranked.c.target, ranked.c.weight,
                  literal(inward).label("inward")).where(ranked.c.r <= top)


def check_neighbourhood(top: int, depth: int, direction: str) -> None:
    """``top`` in 1..100, ``depth`` in 1..4, ``direction`` in/out/both."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise BadInputError(f"top must be an integer from 1 to {MAX_TOP}, not {top!r}.")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise BadInputError(f"depth must be an integer from 1 to {MAX_DEPTH}, not {depth!r}.")
    if direction not in DIRECTIONS:
        raise BadInputError(f"direction must be one of {', '.join(DIRECTIONS)}, "
                            f"not {direction!r}.")


def neighbourhood(db: GraphDB, slug: str, node_id: str, *, top: int = 10, depth: int = 1,
                  direction: str = "both", max_links: int | None = None) -> GraphView:
    """The links around ``node_id`` (see the module doc); ``LIMIT_EXCEEDED`` when more
    than ``max_links`` links would be gathered.

    Examples
    --------
    >>> view = neighbourhood(db, "my-graph", "12_3456_7", top=5, depth=2)  # doctest: +SKIP
    """
    check_neighbourhood(top, depth, direction)
    graph, center = graph_and_node(db, slug, node_id)
    assert center is not None
    found: dict[int, tuple[int, int, int, float]] = {}
    frontiers = {True: [center] if direction != "out" else [],
                 False: [center] if direction != "in" else []}
    seen = {True: {center}, False: {center}}
    for _ in range(depth):  # one statement a hop, both directions at once
        parts = [_ranked(graph, f, inward, top) for inward, f in frontiers.items() if f]
        if not parts:
            break
        table = fetch_arrow(db, parts[0] if len(parts) == 1 else union_all(*parts))
        frontiers = {True: [], False: []}
        for i, s, d, w, inward in zip(*(table.column(c).to_pylist() for c in (
                "idx", "source", "target", "weight", "inward")), strict=True):
            found[i] = (i, s, d, w)
            other = s if inward else d
            if other not in seen[inward]:
                seen[inward].add(other)
                frontiers[inward].append(other)
        if max_links is not None and len(found) > max_links:
            raise LimitExceededError(
                f"this neighbourhood holds over {max_links:,} links; lower top or depth.")
    nids = {center} | {x[1] for x in found.values()} | {x[2] for x in found.values()}
    records = _node_records(db, graph, np.array(sorted(nids)))
    rows = sorted(found.values())
    extras = _link_extras(db, graph, found) if graph.n_link_extras else {}
    links = pa.table({"idx": pa.array([r[0] for r in rows], pa.int32()),
                      "source": pa.array([r[1] for r in rows], pa.int32()),
                      "target": pa.array([r[2] for r in rows], pa.int32()),
                      "weight": pa.array([r[3] for r in rows], pa.float64()),
                      "extra": pa.array([extras.get(r[0]) for r in rows], pa.string()),
                      "edge_score": pa.nulls(len(rows), pa.float64())})
    return GraphView(graph, _in_file_order(records), links, False,
                     {"around": node_id, "top": top, "depth": depth, "direction": direction})


def _link_extras(db: GraphDB, graph: GraphRow, found: dict[int, tuple]) -> dict[int, str]:
    c = t.attribution_links.c
    rows = db.rows(select(c.idx, c.extra).where(and_(
        c.graph_id == graph.graph_id, c.target.in_(sorted({x[2] for x in found.values()})),
        c.idx.in_(sorted(found)), c.extra.is_not(None))))
    return {r["idx"]: r["extra"] for r in rows}
