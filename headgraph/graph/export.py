"""Exports for visualization clients, streamed from the database.

=========  ===========================================  ==================================
format     what reads it                                shape
=========  ===========================================  ==================================
``json``   d3, networkx (``nx.node_link_graph``)         node-link: ``nodes`` / ``edges``
``cyjs``   Cytoscape.js, Cytoscape desktop               ``elements.nodes`` / ``.edges``
``graphml`` Gephi, yEd, networkx (``nx.read_graphml``)   XML with typed attribute keys
``dot``    Graphviz                                      ``digraph`` with edge attributes
=========  ===========================================  ==================================

Nodes carry :data:`NODE_FIELDS` (kind, layer, head, the key/value head a query head reads,
norms, copying scores), their ``roles`` (comma-separated, the same roles as GraphQL's
``Node.roles``: :func:`headgraph.queries.roles.roles_of`) and a layered drawing position
``x`` (residual-stream column: embeddings 0, layer ``l`` at ``l + 1``, the unembedding
last) and ``y`` (head index; an MLP below its layer's heads). Edges carry
:data:`EDGE_FIELDS`: ``kind``, ``score``, ``baseline``, ``null_std``, ``z`` (the
structural z: above what the model's structure explains; empty for a model ingested before
headgraph stored it), ``gaussian_z`` (``(score - baseline) / null_std``), ``rank`` and, on
K and V edges into a head, ``kv_head`` (the target's key/value head the write enters).
Edges are read in Arrow batches and written as they come, so an export of millions of
edges never holds them all (let alone twice). Filters: edge kinds, a minimum score, each
target's top-k feeders, or an explicit set of edges (a circuit or a path set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa
from sqlalchemy import func, select

from headgraph.errors import BadInputError
from headgraph.queries.arrow import arrow_batches, edge_filter
from headgraph.queries.models import get_model
from headgraph.queries.nodes import EDGE_KINDS, check_kind
from headgraph.queries.records import ModelRow
from headgraph.queries.roles import roles_of
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import z_column
from headgraph.schema.tables import edges, nodes

FORMATS = ("json", "cyjs", "graphml", "dot")
NODE_FIELDS = ("kind", "layer", "head", "kv_head", "qk_norm", "ov_norm",
               "copying_positive_fraction", "copying_ratio", "in_norm", "out_norm")
EDGE_FIELDS = ("kind", "score", "baseline", "null_std", "z", "gaussian_z", "rank", "kv_head")
BATCH = 65536


@dataclass(frozen=True)
class ExportFilter:
    kinds: tuple[str, ...] = ("Q", "K", "V")
    min_score: float | None = None
    top_per_target: int | None = None
    edge_keys: frozenset[tuple[str, str, str]] | None = None  # (source, target, kind)

    def __post_init__(self) -> None:
        for k in self.kinds:
            check_kind(k)


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def position(row, model: ModelRow) -> tuple[int, int]:
    """A node's place in a layered drawing: ``(x, y)`` = (residual-stream column, row)."""
    kind, layer, head = row["kind"], row["layer"], row["head"]
    if kind == "head":
        return layer + 1, head
    if kind == "mlp":
        return layer + 1, model.n_heads
    if kind == "unembed":
        return model.n_layers + 1, 0
    return 0, 1 if row["node"] == "POS_EMBED" else 0


def node_records(db: GraphDB, model: ModelRow) -> list[dict]:
    """Every node of the model with its metrics, ``roles`` (as ``Node.roles`` answers) and
    drawing position ``x``, ``y``."""
    rows = sorted(db.rows(select(nodes).where(nodes.c.model_id == model.model_id)),
                  key=lambda r: r["node"])
    roles = roles_of(db, model.model_id, [r["node"] for r in rows])
    out = []
    for r in rows:
        rec = {"id": r["node"]}
        for f in NODE_FIELDS:
            v = _clean(r[f])
            if v is not None:
                rec[f] = v
        rec["roles"] = ",".join(x.role for x in roles.get(r["node"], []))
        rec["x"], rec["y"] = position(r, model)
        out.append(rec)
    return out


def edge_batches(db: GraphDB, model: ModelRow, flt: ExportFilter) -> Iterator[pa.RecordBatch]:
    """The filtered edges in Arrow batches, strongest first within each target."""
    gaussian = ((edges.c.score - edges.c.baseline) / func.nullif(edges.c.null_std, 0)
                ).label("gaussian_z")
    stmt = select(edges.c.source, edges.c.target, edges.c.kind, edges.c.score,
                  edges.c.baseline, edges.c.null_std, z_column(model.structural_z), gaussian,
                  edges.c.rank).where(
        edge_filter(model.model_id, flt.kinds, flt.min_score, flt.top_per_target))
    for batch in arrow_batches(db, stmt, BATCH):
        yield _keep(batch, flt)


def _keep(batch: pa.RecordBatch, flt: ExportFilter) -> pa.RecordBatch:
    if flt.edge_keys is None:
        return batch
    keys = zip(batch.column("source").to_pylist(), batch.column("target").to_pylist(),
               batch.column("kind").to_pylist(), strict=True)
    mask = pa.array([k in flt.edge_keys for k in keys])
    return batch.filter(mask)


def _edge_rows(batches: Iterable[pa.RecordBatch], kv_heads: dict[str, int]) -> Iterator[dict]:
    """Edge dicts with :data:`EDGE_FIELDS` (``kv_head`` from the target's node)."""
    for batch in batches:
        cols = {n: batch.column(n).to_pylist() for n in batch.schema.names}
        for i in range(batch.num_rows):
            row = {n: cols[n][i] for n in cols}
            row["kv_head"] = kv_heads.get(row["target"]) if row["kind"] in ("K", "V") else None
            yield row


def write_export(db: GraphDB, model_name: str, fmt: str, out: TextIO,
                 flt: ExportFilter | None = None) -> int:
    """Write model ``model_name`` in ``fmt`` to ``out``; returns the number of edges."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    flt = flt or ExportFilter()
    model = get_model(db, model_name)
    node_list = node_records(db, model)
    kv_heads = {n["id"]: n["kv_head"] for n in node_list if n.get("kv_head") is not None}
    if flt.edge_keys is not None:
        used = {k[0] for k in flt.edge_keys} | {k[1] for k in flt.edge_keys}
        node_list = [n for n in node_list if n["id"] in used]
    rows = _edge_rows(edge_batches(db, model, flt), kv_heads)
    writer = {"json": _json, "cyjs": _cyjs, "graphml": _graphml, "dot": _dot}[fmt]
    return writer(model, node_list, rows, out)


def _graph_attrs(model: ModelRow) -> dict:
    return {"model": model.name, "architecture": model.architecture,
            "n_layers": model.n_layers, "n_heads": model.n_heads, "d_model": model.d_model}


def _json(model: ModelRow, node_list: list[dict], rows: Iterator[dict], out: TextIO) -> int:
    out.write('{"directed": true, "multigraph": true, "graph": ')
    out.write(json.dumps(_graph_attrs(model)))
    out.write(', "nodes": [')
    out.write(", ".join(json.dumps(n) for n in node_list))
    out.write('], "edges": [')
    count = 0
    for r in rows:
        out.write((", " if count else "") + json.dumps(
            {"source": r["source"], "target": r["target"], "key": r["kind"], **{
                f: r[f] for f in EDGE_FIELDS}}))
        count += 1
    out.write("]}\n")
    return count


def _cyjs(model: ModelRow, node_list: list[dict], rows: Iterator[dict], out: TextIO) -> int:
    out.write('{"format_version": "1.0", "generated_by": "headgraph", "data": ')
    out.write(json.dumps(_graph_attrs(model)))
    out.write(', "elements": {"nodes": [')
    out.write(", ".join(json.dumps({"data": n, "position": {"x": 120 * n["x"],
                                                             "y": 60 * n["y"]}})
                        for n in node_list))
    out.write('], "edges": [')
    count = 0
    for r in rows:
        data = {"id": f"{r['source']}-{r['kind']}->{r['target']}", "source": r["source"],
                "target": r["target"], **{f: r[f] for f in EDGE_FIELDS}}
        out.write((", " if count else "") + json.dumps({"data": data}))
        count += 1
    out.write("]}}\n")
    return count


_GRAPHML_TYPES = {"kind": "string", "layer": "int", "head": "int", "kv_head": "int",
                  "roles": "string", "x": "int", "y": "int", "score": "double",
                  "baseline": "double", "null_std": "double", "z": "double",
                  "gaussian_z": "double", "rank": "int"}


def _graphml(model: ModelRow, node_list: list[dict], rows: Iterator[dict], out: TextIO) -> int:
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n'
              '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n')
    node_keys = (*NODE_FIELDS, "roles", "x", "y")
    for f in node_keys:
        out.write(f'  <key id="n_{f}" for="node" attr.name="{f}" '
                  f'attr.type="{_GRAPHML_TYPES.get(f, "double")}"/>\n')
    for f in EDGE_FIELDS:
        out.write(f'  <key id="e_{f}" for="edge" attr.name="{f}" '
                  f'attr.type="{_GRAPHML_TYPES.get(f, "double")}"/>\n')
    out.write(f'  <graph id={quoteattr(model.name)} edgedefault="directed">\n')
    for n in node_list:
        out.write(f"    <node id={quoteattr(n['id'])}>")
        for f in node_keys:
            if f in n and n[f] != "":
                out.write(f'<data key="n_{f}">{escape(str(n[f]))}</data>')
        out.write("</node>\n")
    count = 0
    for r in rows:
        out.write(f"    <edge source={quoteattr(r['source'])} target={quoteattr(r['target'])}>")
        for f in EDGE_FIELDS:
            if r[f] is not None:
                out.write(f'<data key="e_{f}">{escape(str(r[f]))}</data>')
        out.write("</edge>\n")
        count += 1
    out.write("  </graph>\n</graphml>\n")
    return count


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(model: ModelRow, node_list: list[dict], rows: Iterator[dict], out: TextIO) -> int:
    out.write(f"digraph {_dot_id(model.name)} {{\n  rankdir=LR;\n")
    for n in node_list:
        attrs = [f"{k}={_dot_id(str(v))}" for k, v in n.items() if k != "id" and v != ""]
        out.write(f"  {_dot_id(n['id'])} [{', '.join(attrs)}];\n")
    colours = {"Q": "#1f77b4", "K": "#d62728", "V": "#2ca02c", "MLP": "#9467bd",
               "UNEMBED": "#7f7f7f"}
    count = 0
    for r in rows:
        attrs = ", ".join(f"{f}={_dot_id(str(r[f]))}" for f in EDGE_FIELDS if r[f] is not None)
        out.write(f"  {_dot_id(r['source'])} -> {_dot_id(r['target'])} [{attrs}, "
                  f"color={_dot_id(colours[r['kind']])}];\n")
        count += 1
    out.write("}\n")
    return count


__all__ = ["FORMATS", "ExportFilter", "write_export", "EDGE_KINDS"]
