"""Store a parsed circuit (:mod:`headgraph.circuits.formats`) on a stored model, in one
transaction: checked against the model's nodes first, so a circuit for another model
writes nothing.

Re-importing the same (model, tool, task) is refused with ``CIRCUIT_EXISTS`` unless
``replace``, which swaps the old rows for the new ones in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy import and_, delete, insert, select
from sqlalchemy.exc import DBAPIError

from headgraph.circuits.files import read_circuit
from headgraph.circuits.formats import DEFAULT_TOOL, CircuitError, ParsedCircuit
from headgraph.errors import BadInputError, DatabaseError, ModelNotFoundError
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.database import (
    begin_writing,
    create_db_engine,
    ensure_schema,
    raise_db_error,
    resolve_target,
)
from headgraph.schema.imports import ImportReport, Progress

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+@/ ")


class CircuitExistsError(DatabaseError):
    """A circuit of this model, tool and task is already stored (use --replace)."""

    code = "CIRCUIT_EXISTS"
    exit_status = 4


def metrics(tool: str) -> tuple[str, str]:
    """The ``edge_scores`` metrics of a tool's circuit: (in_graph, score)."""
    return f"{tool}:in_graph", f"{tool}:score"


def probe_of(task: str) -> str:
    """The ``edge_scores`` probe of a task's circuit."""
    return f"task:{task}"


def _check_label(what: str, value: str) -> str:
    if not value or not set(value) <= _NAME_OK or ":" in value:
        raise BadInputError(f"{what} {value!r} must be non-empty letters, digits and -_.+@/ "
                            "(no ':').")
    return value


def _check_fits(circuit: ParsedCircuit, model: str, n_layers: int, n_heads: int,
                names: set[str]) -> None:
    cfg = circuit.header.get("cfg") if isinstance(circuit.header.get("cfg"), dict) else {}
    for key, have in (("n_layers", n_layers), ("n_heads", n_heads)):
        if key in cfg and cfg[key] != have:
            raise CircuitError(f"the circuit's cfg has {key}={cfg[key]!r}, but model {model!r} "
                               f"has {have}: it was found on another model.")
    missing = sorted({n for e in circuit.edges for n in (e.source, e.target)} - names)
    if missing:
        raise CircuitError(f"the circuit names nodes model {model!r} does not have: "
                           f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
                           f"({n_layers} layers x {n_heads} heads). Nothing was written.")
    seen: set[tuple[str, str, str]] = set()
    for e in circuit.edges:
        key = (e.source, e.target, e.kind)
        if key in seen:
            hint = (" A per-token circuit gives each edge's positions: auto-circuit's export "
                    "[[seq_idx, \"Src->Dest\"], ...]." if circuit.format == "edge-list" else "")
            raise CircuitError(f"the edge {e.source} -> {e.target} ({e.kind}) appears twice."
                               + hint)
        seen.add(key)


def import_circuit(path: str | os.PathLike[str], db: str | os.PathLike[str] | None, *,
                   model: str, task: str | None = None, tool: str | None = None,
                   replace: bool = False, progress: Progress | None = None) -> ImportReport:
    """Import the circuit file at ``path`` as evidence on stored model ``model``.

    ``task`` names what the circuit does (default: the file's stem); ``tool`` the method
    that found it (default by naming: eap-ig, acdc or auto-circuit).

    Examples
    --------
    >>> import_circuit("ioi.json", "hg.duckdb", model="gpt2", task="ioi")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file.")
    clock = time.perf_counter()
    circuit = read_circuit(path, None)  # a file that is no circuit touches no database
    if progress is not None:
        progress("read", 1, 1)
    target = resolve_target(db)
    engine = create_db_engine(target, read_only=False)
    try:
        with begin_writing(engine, target) as conn:
            ensure_schema(conn, target)
            m = t.models.c
            row = conn.execute(select(m.model_id, m.n_layers, m.n_heads)
                               .where(m.name == model)).first()
            if row is None:
                raise ModelNotFoundError(f"no model named {model!r} in {target}; ingest it "
                                         "first, or pass --model with a stored name.")
            circuit.check_layers(row.n_layers)
            names = {r[0] for r in conn.execute(select(t.nodes.c.node)
                                                .where(t.nodes.c.model_id == row.model_id))}
            circuit = circuit.expanded("POS_EMBED" in names)
            _check_fits(circuit, model, row.n_layers, row.n_heads, names)
            tool = _check_label("tool", tool or DEFAULT_TOOL[circuit.naming])
            task = _check_label("task", task or path.stem)
            replaced = _store(conn, row.model_id, circuit, tool, task, str(path.resolve()),
                              replace, f"{model}/{tool}/{task}")
            if progress is not None:
                progress("write", 1, 1)
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=False)
    finally:
        engine.dispose()
    n_in = sum(e.in_graph for e in circuit.edges)
    rows = {"edges": len(circuit.edges), "in_graph": n_in}
    notes = []
    if circuit.header.get("internal"):
        rows["internal edges"] = len(circuit.header["internal"])
        notes.append("ACDC's edges inside a head or MLP (hook_q_input -> attn.hook_q ...) are "
                     "kept with the circuit, on no composition edge")
    if circuit.header.get("token_circuit"):
        rows["positions"] = len(circuit.header["entries"])
        notes.append("a per-token circuit: an edge is in it if it is at any position; "
                     "the positions are kept (export, Python)")
    style = circuit.header.get("style") or {}
    if style.get("qkv"):
        notes.append("heads read through all of Q, K and V (separate_qkv=False): each such "
                     "edge is stored on the Q, K and V edges")
    if style.get("resid_pre"):
        notes.append("the embedding with positions (resid_pre, Resid Start) is stored on the "
                     "EMBED and POS_EMBED edges")
    return ImportReport("circuit", f"{model}/{tool}/{task}", str(target), rows,
                        {"import": time.perf_counter() - clock}, replaced, tuple(notes))


def _store(conn, model_id: int, circuit: ParsedCircuit, tool: str, task: str, source: str,
           replace: bool, label: str) -> bool:
    t.metadata.create_all(conn, tables=[t.circuits], checkfirst=True)
    c = t.circuits.c
    old = conn.execute(select(c.circuit_id).where(and_(
        c.model_id == model_id, c.tool == tool, c.task == task))).first()
    if old is not None and not replace:
        raise CircuitExistsError(f"a circuit {label} is already stored; pass --replace to "
                                 "overwrite it, or --task to store it under another task.")
    in_metric, score_metric = metrics(tool)
    s = t.edge_scores.c
    conn.execute(delete(t.edge_scores).where(and_(
        s.model_id == model_id, s.probe == probe_of(task),
        s.metric.in_([in_metric, score_metric]))))
    conn.execute(delete(t.circuits).where(and_(
        c.model_id == model_id, c.tool == tool, c.task == task)))
    conn.execute(insert(t.circuits).values(
        model_id=model_id, tool=tool, task=task, probe=probe_of(task), format=circuit.format,
        naming=circuit.naming, header=json.dumps(circuit.header),
        n_edges=len(circuit.edges), n_in_graph=sum(e.in_graph for e in circuit.edges),
        source=source, imported_at=dt.datetime.now(dt.UTC)))
    edges = circuit.edges
    scored = [e for e in edges if e.score is not None]
    n = len(edges) + len(scored)
    bulk_insert(conn, "edge_scores", pa.table({
        "model_id": pa.array(np.full(n, model_id, np.int32)),
        "source": pa.array([e.source for e in edges] + [e.source for e in scored]),
        "target": pa.array([e.target for e in edges] + [e.target for e in scored]),
        "kind": pa.array([e.kind for e in edges] + [e.kind for e in scored]),
        "metric": pa.array([in_metric] * len(edges) + [score_metric] * len(scored)),
        "probe": pa.array([probe_of(task)] * n),
        "value": pa.array([float(e.in_graph) for e in edges] + [e.score for e in scored],
                          pa.float32()),
    }))
    return old is not None
