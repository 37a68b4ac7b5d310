"""Writing a stored circuit back in the format it came in.

An EAP-IG circuit (``to_json`` or ``to_pt``) exports as ``{"cfg", "nodes", "edges"}`` with
every edge's score and ``in_graph``: equal JSON to the imported ``to_json`` file when its
scores were float32 values (what EAP-IG writes). An auto-circuit export comes back as the
list it was (positions and all). An edge list (and ACDC's ``save_subgraph``) exports its
comment lines, then one edge a line in its naming and spelling, ordered by target, kind and
source, with the score as the shortest decimal that reads back as the same float32; names
that stood for several edges (``blocks.0.hook_resid_pre``, ``Resid Start``, auto-circuit's
``A1.2`` as a target) are written once; ACDC's internal edges follow.
"""

from __future__ import annotations

import json
import struct

from sqlalchemy import and_, select

from headgraph.circuits.formats import CircuitEdge, edge_name
from headgraph.errors import BadInputError
from headgraph.queries.circuits import CircuitRow, list_circuits
from headgraph.queries.models import get_model
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t


def circuit_edges(db: GraphDB, circuit: CircuitRow) -> list[CircuitEdge]:
    """The circuit's edges with their score (None if the file had none) and membership."""
    s = t.edge_scores.c
    rows = db.rows(select(s.source, s.target, s.kind, s.metric, s.value).where(and_(
        s.model_id == circuit.model_id, s.probe == circuit.probe,
        s.metric.in_([circuit.in_graph_metric, circuit.score_metric]))))
    found: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in rows:
        found.setdefault((r["source"], r["target"], r["kind"]), {})[r["metric"]] = r["value"]
    return [CircuitEdge(k[0], k[1], k[2], v.get(circuit.score_metric),
                        v.get(circuit.in_graph_metric, 0.0) > 0.5)
            for k, v in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))]


def f32_text(x: float) -> str:
    """The shortest decimal that reads back as the same 4-byte float as ``x``."""
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == struct.unpack(
                "f", struct.pack("f", x))[0]:
            return text
    return repr(x)


def export_circuit(db: GraphDB, model: str, tool: str, task: str) -> str:
    """Circuit (model, tool, task) as the text of its original format.

    Examples
    --------
    >>> json.loads(export_circuit(db, "toy", "eap-ig", "induction"))["cfg"]  # doctest: +SKIP
    {'n_layers': 2, 'n_heads': 4, ...}
    """
    row = get_model(db, model)
    found = list_circuits(db, row, tool, task)
    if not found:
        stored = [(c.tool, c.task) for c in list_circuits(db, row)]
        raise BadInputError(f"model {model!r} has no circuit of tool {tool!r} and task "
                            f"{task!r}; stored: {stored}.")
    circuit = found[0]
    header = json.loads(circuit.header)
    style = header.pop("style", None) or {}
    edges = circuit_edges(db, circuit)
    if circuit.format == "auto-circuit-json":
        return json.dumps(header["entries"], indent=4)
    if circuit.format in ("eap-ig-json", "eap-ig-pt"):
        out = dict(header)
        out["edges"] = {edge_name(e, circuit.naming, row.n_layers): {
            "score": e.score, "in_graph": e.in_graph} for e in edges}
        return json.dumps(out)
    lines = list(header.get("comments", []))
    written: set[str] = set()
    for e in edges:
        if style.get("resid_pre") and e.source == "POS_EMBED":
            continue  # stored beside EMBED for one name (resid_pre): written once, there
        name = edge_name(e, circuit.naming, row.n_layers, style)
        if name in written:  # Q, K and V of one separate_qkv=False name
            continue
        written.add(name)
        lines.append(name if e.score is None else f"{name}\t{f32_text(e.score)}")
    for name, score in header.get("internal", []):
        lines.append(name if score is None else f"{name}\t{score!r}")
    return "\n".join(lines) + "\n"
