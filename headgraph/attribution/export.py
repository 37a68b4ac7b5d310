"""Attribution graphs and their views as Neuronpedia / circuit-tracer graph JSON.

:func:`write_graph` writes a stored graph back as it was imported: the top-level fields
kept at import, then every node and every link in file order, each with all of its
fields (equal JSON up to the order of keys). Links go out in Arrow batches of
:data:`BATCH`, formatted by pyarrow (a weight's text is the shortest decimal that reads
back as the same double), so a 16M-link graph streams without Python objects per link.

:func:`write_view` writes a :class:`~headgraph.attribution.graphs.GraphSlice` in the same
format: the header with ``metadata.pruning_settings`` (pruned views) or
``qParams.clickedId`` (neighbourhoods) set, the view's nodes and links. Both are what
Neuronpedia's frontend opens; ``tests/neuronpedia_graph_schema.json`` is the part of its
schema they are checked against.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import and_, select

from headgraph.attribution.format import decode_node, dumps, number
from headgraph.attribution.graphs import GraphRow, GraphSlice, all_columns, get_graph
from headgraph.queries.arrow import fetch_arrow
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

BATCH = 1 << 20


def _header(out: TextIO, header: dict[str, Any]) -> None:
    out.write("{")
    for key, value in header.items():
        out.write(f"{json.dumps(key)}: {dumps(value)}, ")


def write_graph(db: GraphDB, slug: str, out: TextIO, model: str | None = None) -> int:
    """Write graph ``slug`` (of ``model``, or of any model while the slug is unique) as
    imported; returns the number of links written. Node ids are the file's, shared ones
    included.

    Examples
    --------
    >>> with open("back.json", "w") as f:  # doctest: +SKIP
    ...     write_graph(db, "my-graph", f)
    """
    graph = get_graph(db, slug, model)
    _header(out, graph.header)
    n = t.attribution_nodes.c
    nodes = fetch_arrow(db, all_columns(t.attribution_nodes)
                        .where(n.graph_id == graph.graph_id).order_by(n.idx)).to_pylist()
    out.write('"nodes": [')
    out.write(", ".join(dumps(decode_node(r)) for r in nodes))
    out.write('], "links": [')
    quoted = [""] * len(nodes)
    for r in nodes:
        quoted[r["nid"]] = json.dumps(r["node_id"], ensure_ascii=False)
    written = _write_links(db, graph, pa.array(quoted, pa.string()), out)
    out.write("]}")
    return written


def _write_links(db: GraphDB, graph: GraphRow, quoted: pa.Array, out: TextIO) -> int:
    c = t.attribution_links.c
    written = 0
    for start in range(0, graph.n_links, BATCH):
        batch = fetch_arrow(db, select(c.source, c.target, c.weight, c.extra).where(and_(
            c.graph_id == graph.graph_id, c.idx >= start, c.idx < start + BATCH))
            .order_by(c.idx))
        out.write(_format_links(batch, quoted, first=written == 0))
        written += batch.num_rows
    return written


def _format_links(batch: pa.Table, quoted: pa.Array, *, first: bool) -> str:
    """``, {"source": ..., "target": ..., "weight": ...}`` per link, as one string."""
    if batch.num_rows == 0:
        return ""
    weight = batch.column("weight").combine_chunks()
    if batch.column("extra").null_count < batch.num_rows or not pc.all(
            pc.is_finite(weight)).as_py():
        return _format_slow(batch, quoted, first=first)
    src = pc.take(quoted, batch.column("source"))
    tgt = pc.take(quoted, batch.column("target"))
    text = pc.binary_join_element_wise(', {"source": ', src, ', "target": ', tgt,
                                       ', "weight": ', pc.cast(weight, pa.string()), "}", "")
    joined = pc.binary_join(pa.array([text.combine_chunks()], pa.list_(pa.string())), "")
    result = joined[0].as_py()
    return result[2:] if first else result


def _format_slow(batch: pa.Table, quoted: pa.Array, *, first: bool) -> str:
    parts = []
    names = quoted.to_pylist()
    for s, d, w, extra in zip(*(batch.column(k).to_pylist() for k in
                                ("source", "target", "weight", "extra")), strict=True):
        link = f'{{"source": {names[s]}, "target": {names[d]}, "weight": {number(w)}'
        if extra:
            link += ", " + dumps(json.loads(extra))[1:-1]
        parts.append(link + "}")
    text = ", ".join(parts)
    return text if first else ", " + text


def view_header(view: GraphSlice) -> dict[str, Any]:
    """The header of a view: the graph's, with the view's parameters where Neuronpedia's
    frontend reads them.

    * influence views (Neuronpedia's own rule): ``metadata.node_threshold`` is the
      view's threshold, so the frontend's slider starts there and filters as the view did;
    * recomputed views: ``metadata.pruning_settings`` holds the thresholds and
      ``metadata.node_threshold`` is 0, because the frontend would otherwise filter the
      view's nodes again on the file's influence (it does so only when that is > 0);
    * pinned nodes asked for join ``qParams.pinnedIds``, a clicked node (or a
      neighbourhood's centre) is ``qParams.clickedId``.
    """
    header = view.graph.header
    params = view.params
    meta = dict(header.get("metadata") or {})
    q = dict(header.get("qParams") or {})
    if params.get("prune") == "recompute":
        meta["pruning_settings"] = {"node_threshold": params["node_threshold"],
                                    "edge_threshold": params["edge_threshold"]}
        meta["node_threshold"] = 0
    elif params.get("prune") == "influence" and params.get("node_threshold") is not None:
        meta["node_threshold"] = params["node_threshold"]
    pinned = [x for x in params.get("pinned") or () if x not in (q.get("pinnedIds") or [])]
    if pinned:
        q["pinnedIds"] = [*(q.get("pinnedIds") or []), *pinned]
    clicked = params.get("around") or params.get("clicked")
    if clicked:
        q["clickedId"] = clicked
    if meta or "metadata" in header:
        header["metadata"] = meta
    if q or "qParams" in header:
        header["qParams"] = q
    return header


def write_view(view: GraphSlice, out: TextIO) -> int:
    """Write ``view`` as graph JSON; returns the number of links written."""
    _header(out, view_header(view))
    out.write('"nodes": [')
    out.write(", ".join(dumps(n.fields) for n in view.nodes))
    out.write('], "links": [')
    quoted = pa.array([None if x is None else json.dumps(x, ensure_ascii=False)
                       for x in view.node_ids().to_pylist()], pa.string())
    out.write(_format_links(view.links, quoted, first=True))
    out.write("]}")
    return view.links.num_rows
