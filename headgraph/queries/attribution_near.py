"""The neighbourhood of one node of an attribution graph: up to ``top`` in-links
(strongest ``|weight|``) of every node reached upstream and ``top`` out-links of every
node reached downstream, ``depth`` hops each way. Each hop is one SQL statement for both
directions: in-links come from ``attribution_links`` (stored by target height, then
target; the target's height is named too, so zone maps skip to the one block that holds
it) and out-links from ``attribution_out_links`` (stored by source). One node's links are
its strongest ``top`` (``ORDER BY |weight| DESC, idx LIMIT top``); several nodes' are
ranked per node with ``row_number()``. The cost follows the answer, not the graph.

The statement is written as text with the (integer) ids in it: it is small, and building
it through SQLAlchemy's compiler cost more than running it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from sqlalchemy import and_, select, text

from headgraph.errors import BadInputError, LimitExceededError
from headgraph.queries.arrow import fetch_arrow
from headgraph.queries.attribution import (
    GraphRow,
    GraphView,
    _in_file_order,
    _node_records,
    graph_and_node,
    graph_nodes,
)
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

DIRECTIONS = ("in", "out", "both")
MAX_DEPTH = 4
MAX_TOP = 100
_COLUMNS = "idx, source, target, weight"


def _ranked(graph_id: int, frontier: Sequence[int], inward: bool, top: int,
            height: int | None) -> str:
    """SQL for up to ``top`` links (largest ``|weight|``, then file order) into
    (``inward``) or out of each node of ``frontier``; ``height`` is theirs when known."""
    table, key = ("attribution_links", "target") if inward else ("attribution_out_links",
                                                                 "source")
    where = f"graph_id = {int(graph_id)}"
    if height is not None:
        where += f" AND target_height = {int(height)}"
    flag = "TRUE" if inward else "FALSE"
    if len(frontier) == 1:
        return (f"(SELECT {_COLUMNS}, {flag} AS inward FROM {table} WHERE {where} AND "
                f"{key} = {int(frontier[0])} ORDER BY abs(weight) DESC, idx LIMIT {int(top)})")
    nodes = ", ".join(str(int(x)) for x in frontier)
    return (f"(SELECT {_COLUMNS}, {flag} AS inward FROM (SELECT {_COLUMNS}, row_number() "
            f"OVER (PARTITION BY {key} ORDER BY abs(weight) DESC, idx) AS r FROM {table} "
            f"WHERE {where} AND {key} IN ({nodes})) ranked WHERE r <= {int(top)})")


def _hop(db: GraphDB, graph: GraphRow, frontiers: dict[bool, list[int]], top: int) -> str:
    """One statement for a hop: out-links of the downstream frontier, in-links of the
    upstream one (by target height when the graph stores heights)."""
    parts = []
    if frontiers[False]:
        parts.append(_ranked(graph.graph_id, frontiers[False], False, top, None))
    if frontiers[True]:
        heights = graph_nodes(db, graph).heights
        if heights is None:
            parts.append(_ranked(graph.graph_id, frontiers[True], True, top, None))
        else:
            by_height: dict[int, list[int]] = defaultdict(list)
            for node in frontiers[True]:
                by_height[int(heights[node])].append(node)
            parts.extend(_ranked(graph.graph_id, nodes, True, top, h)
                         for h, nodes in sorted(by_height.items()))
    return " UNION ALL ".join(parts)


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
        if not frontiers[True] and not frontiers[False]:
            break
        table = fetch_arrow(db, text(_hop(db, graph, frontiers, top)))
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
