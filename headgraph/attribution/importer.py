"""Import a circuit-tracer / Neuronpedia attribution graph JSON, streaming, in one
transaction.

Steps (each reported to ``progress``):

1. ``read``: :func:`~headgraph.attribution.jsonstream.read_document` walks the file;
   ``nodes`` and ``links`` arrive in ~8 MB runs. Links are parsed by pyarrow straight into
   Arrow columns (Python's ``json`` only for runs pyarrow refuses: extra fields, NaN) and
   their ids mapped to node positions with ``pyarrow.compute.index_in``. What stays in
   memory is three numbers per link (16 bytes), never the text or Python objects.
   Numbers that are not finite, nesting deeper than 64, lone surrogates are refused
   as they are read (:mod:`headgraph.attribution.jsonstream`); then the slug and the
   model (:mod:`headgraph.attribution.names`), and links that name an id two nodes hold
   are placed (:mod:`headgraph.attribution.shared_ids`).
2. ``influence``: node influence on the whole graph and each node's height
   (:func:`headgraph.attribution.pruning.influence_and_heights`, one pass), the influence's
   cumulative share, and the keep order: tokens and logits first (file order), then by
   influence, largest first. A node's rank in that order is its ``nid``, so the nodes a
   node threshold keeps are always ``nid < K``. These depend on the graph alone, never
   on a view's thresholds, so they are computed here once.
3. ``write``: graph row, nodes, and links by ``nid``: ``attribution_links`` sorted by
   (target height, target), so that a pruned view processes them height by height
   without sorting (:mod:`headgraph.attribution.pruning_height`); ``attribution_out_links``
   by source; each ordered by a radix sort in numpy and appended as one Arrow table
   (DuckDB: a registered table; PostgreSQL: binary COPY), one after the other; and the
   links of the view at the default node threshold with their edge scores
   (:mod:`headgraph.attribution.default_view`). A failure anywhere leaves nothing behind.

Examples
--------
>>> import_graph("graph.json", "headgraph.duckdb")  # doctest: +SKIP
ImportReport(kind='attribution-graph', name='my-graph', ...)
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DBAPIError

from headgraph.attribution import pruning
from headgraph.attribution.default_view import pruned_links
from headgraph.attribution.format import (
    NODE_COLUMNS,
    check_text,
    dumps,
    encode_link_extra,
    encode_node,
    role_of,
)
from headgraph.attribution.jsonstream import CHUNK, loads, not_finite, read_document
from headgraph.attribution.names import check_slug, model_of
from headgraph.attribution.shared_ids import place_links, shared_groups
from headgraph.errors import BadInputError, GraphExistsError
from headgraph.schema import tables as t
from headgraph.schema.database import (
    DatabaseTarget,
    begin_writing,
    create_db_engine,
    ensure_schema,
    raise_db_error,
    resolve_target,
)
from headgraph.schema.imports import ImportReport, Progress, insert_arrow
from headgraph.version import __version__

WORKERS = 2  # threads parsing runs of links (pyarrow releases the GIL)
MAX_LEVELS = 1 << 15  # heights are stored as small integers
_LINK = pa.struct([("source", pa.string()), ("target", pa.string()), ("weight", pa.float64())])
_RUN_KEY = "\x01run"  # the wrapper's one key: no sibling field of `links` can close it
_RUN_SCHEMA = pa.schema([(_RUN_KEY, pa.list_(_LINK))])


class _Links:
    """Links as they are read: node positions, or raw ids while the nodes are not known
    (a file whose ``links`` come before its ``nodes``)."""

    def __init__(self, nodes: _Nodes) -> None:
        self.nodes = nodes
        self.ids: pa.Array | None = None  # node_id per node position, once nodes are read
        self.parts: list[tuple[Any, Any, np.ndarray]] = []
        self.extras: list[tuple[int, str]] = []
        self.count = 0

    def add(self, source: pa.Array, target: pa.Array, weight: np.ndarray,
            extras: list[str | None] | None = None) -> None:
        if extras is not None:
            self.extras.extend((self.count + i, e) for i, e in enumerate(extras) if e)
        if self.ids is None and self.nodes.rows:  # fields come one at a time: nodes are done
            self.ids = self.nodes.ids()
        if self.ids is not None:
            source, target = self._positions(source), self._positions(target)
        self.parts.append((source, target, weight))
        self.count += len(weight)

    def _positions(self, ids: pa.Array) -> np.ndarray:
        assert self.ids is not None
        pos = pc.index_in(ids, value_set=self.ids)
        if pos.null_count:
            missing = pc.filter(ids, pos.is_null()).unique()[:5].to_pylist()
            raise BadInputError(f"links name nodes that are not in `nodes`: {missing}.")
        return pos.to_numpy(zero_copy_only=False).astype(np.int32)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, target) node positions and weights of every link, in file order."""
        if self.ids is None:
            self.ids = self.nodes.ids()
        parts = [(p if isinstance(p, np.ndarray) else self._positions(p),
                  q if isinstance(q, np.ndarray) else self._positions(q), w)
                 for p, q, w in self.parts]
        self.parts = []
        if not parts:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float64)
        src, tgt, weight = (np.concatenate(c) for c in zip(*parts, strict=True))
        return src, tgt, weight

    def prepare(self, run: bytes) -> tuple | None:
        """Parse one run of links (any thread): pyarrow against the link schema, else
        Python's ``json`` (extra fields, NaN); None if the run is not valid JSON."""
        buf = b'{"\\u0001run":[' + run + b"]}"
        try:
            table = pj.read_json(
                io.BytesIO(buf),
                read_options=pj.ReadOptions(block_size=len(buf) + 64, use_threads=False),
                parse_options=pj.ParseOptions(explicit_schema=_RUN_SCHEMA,
                                              unexpected_field_behavior="error"))
            links = table.column(0).chunk(0).flatten()
            cols = [links.field(k) for k in ("source", "target", "weight")]
            if not any(c.null_count for c in cols):
                weight = cols[2].to_numpy(zero_copy_only=False)
                if not np.isfinite(weight).all():  # 1e999 reads as inf
                    raise not_finite(repr(float(weight[~np.isfinite(weight)][0])))
                return cols[0], cols[1], weight, None
        except (pa.ArrowInvalid, IndexError):
            pass
        return self._prepare_slow(run)

    @staticmethod
    def _prepare_slow(run: bytes) -> tuple | None:
        try:
            links = loads(b"[" + run + b"]")
        except ValueError:
            return None  # not valid JSON: the reader tries another cut
        for link in links:
            weight = link.get("weight") if isinstance(link, dict) else None
            if not (isinstance(link, dict) and isinstance(link.get("source"), str)
                    and isinstance(link.get("target"), str)
                    and isinstance(weight, int | float) and not isinstance(weight, bool)):
                raise BadInputError("every link needs string source and target and a number "
                                    f"weight: {str(link)[:120]}")
        try:
            weights = np.array([float(x["weight"]) for x in links], np.float64)
        except OverflowError:  # an integer beyond any double
            raise not_finite("an integer weight beyond 1.8e308") from None
        if not np.isfinite(weights).all():
            raise not_finite(repr(float(weights[~np.isfinite(weights)][0])))
        for link in links:
            check_text(link["source"], "a link's source")
            check_text(link["target"], "a link's target")
        return (pa.array([x["source"] for x in links], pa.string()),
                pa.array([x["target"] for x in links], pa.string()),
                weights, [encode_link_extra(x) for x in links])

    def apply(self, parsed: tuple) -> None:
        self.add(*parsed)


class _Nodes:
    """Node rows as they are read (:func:`encode_node`)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    @staticmethod
    def prepare(run: bytes) -> list | None:
        try:
            return loads(b"[" + run + b"]")
        except ValueError:
            return None

    def apply(self, items: list) -> None:
        start = len(self.rows)
        self.rows.extend(encode_node(n, start + i) for i, n in enumerate(items))

    def ids(self) -> pa.Array:
        """node_id per position (an id held by several nodes finds the first of them:
        :mod:`headgraph.attribution.shared_ids` places its links after reading)."""
        return pa.array([r["node_id"] for r in self.rows], pa.string())


def read_graph(path: Path, progress: Progress | None = None, chunk: int = CHUNK,
               workers: int = WORKERS) -> tuple[dict[str, Any], list[dict[str, Any]], _Links]:
    """Stream ``path``: (top-level fields but nodes and links, node rows, links), runs
    parsed by ``workers`` threads."""
    nodes = _Nodes()
    links = _Links(nodes)
    size = path.stat().st_size

    def on_read(offset: int) -> None:
        if progress is not None:
            progress("read", min(offset, size), size)

    with path.open("rb") as f:
        doc, streamed = read_document(f, {"nodes": nodes, "links": links}, chunk=chunk,
                                      workers=workers, on_read=on_read)
    if "nodes" not in streamed or "links" not in streamed:
        raise BadInputError(f"{path}: an attribution graph needs `nodes` and `links` arrays "
                            "(circuit-tracer / Neuronpedia graph JSON).")
    return doc, nodes.rows, links


def keep_order(roles: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Node positions in keep order: tokens and logits (file order), then the rest by
    influence, largest first (file order among equals)."""
    pinned = np.flatnonzero((roles == pruning.TOKEN) | (roles == pruning.LOGIT))
    rest = np.flatnonzero((roles != pruning.TOKEN) & (roles != pruning.LOGIT))
    rest = rest[np.argsort(-scores[rest], kind="stable")]
    return np.concatenate([pinned, rest])


def import_graph(path: str | os.PathLike[str], db: str | os.PathLike[str] | None = None, *,
                 model: str | None = None, replace: bool = False,
                 progress: Progress | None = None, chunk: int = CHUNK,
                 workers: int = WORKERS) -> ImportReport:
    """Import the attribution graph JSON at ``path`` into ``db`` (see the module doc).

    ``model`` names the model it explains (default: the model ``metadata.scan`` names,
    :func:`headgraph.attribution.names.model_of`). A stored graph of the same model and
    ``metadata.slug`` is refused with ``GRAPH_EXISTS`` unless ``replace``, which replaces
    that model's graph only. Node ids may repeat across feature types
    (:mod:`headgraph.attribution.shared_ids`).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file.")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    doc, rows, links = read_graph(path, progress, chunk, workers)
    src, tgt, weight = links.arrays()
    timings["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    if "slug" in metadata:
        slug = check_slug(metadata["slug"], "metadata.slug; fix it in the file")
    else:
        slug = check_slug(path.stem, "the file name, as metadata has no slug; rename the file")
    model, named_by = model_of(metadata.get("scan"), model)
    document = check_text(dumps(doc), "the file's metadata or qParams")
    n = len(rows)
    roles = np.array([role_of(r["feature_type"]) for r in rows], np.int16)
    groups = shared_groups([r["node_id"] for r in rows], [r["feature_type"] for r in rows])
    notes = [f"model {model!r} from {named_by}"] if named_by != "--model" else []
    if groups:
        placed = place_links(src, tgt, groups, roles, [r["layer"] for r in rows])
        notes.append(f"{len(groups)} node id(s) held by two nodes ({', '.join(list(groups)[:3])}"
                     f"): nodes keyed id@position; {placed.by_file_order} link(s) the file "
                     "cannot place went to the last node of the id, as in Neuronpedia")
    if n and not (roles == pruning.LOGIT).any():  # no logit nodes: the sinks stand in
        roles[np.bincount(src, minlength=n) == 0] = pruning.LOGIT
    token_prob = np.array([np.nan if r["token_prob"] is None else r["token_prob"]
                           for r in rows], np.float64)
    scores, heights = pruning.influence_and_heights(
        n, src, tgt, weight, pruning.logit_weights(roles, token_prob))
    cum = pruning.cumulative_share(scores)
    order = keep_order(roles, scores)
    nid = np.empty(n, np.int32)
    nid[order] = np.arange(n, dtype=np.int32)
    # heights by nid; a chain deeper than a small integer holds: links by target only
    levels: int | None = int(heights.max()) + 1 if n else 0
    by_nid = heights[order].astype(np.int16) if levels <= MAX_LEVELS else None
    if by_nid is None:
        levels = None
    if progress is not None:
        progress("influence", 1, 1)
    timings["influence"] = time.perf_counter() - clock
    clock = time.perf_counter()
    info = _GraphInfo(slug, model, metadata.get("prompt"),
                      document, n, len(weight),
                      int(((roles == pruning.TOKEN) | (roles == pruning.LOGIT)).sum()),
                      len(links.extras), str(path.resolve()), levels,
                      _Default(pruning.keep_count(scores[order], cum[order], roles[order],
                                                  pruning.NODE_THRESHOLD),
                               roles[order], token_prob[order]))
    node_table = _node_table(rows, order, roles, scores, cum, by_nid)
    n_links = len(weight)
    sorted_links = _SortedLinks(nid[src], nid[tgt], weight, links.extras, n, by_nid)
    del src, tgt, weight
    target = resolve_target(db)
    replaced = _write(target, info, node_table, sorted_links, replace)
    if progress is not None:
        progress("write", 1, 1)
    timings["write"] = time.perf_counter() - clock
    rows_out = {"nodes": n, "links": n_links}
    if groups:
        rows_out["shared node ids"] = len(groups)
    return ImportReport("attribution-graph", f"{model}/{slug}", str(target), rows_out,
                        timings, replaced, tuple(notes))


@dataclass(frozen=True)
class _GraphInfo:
    slug: str
    model: str
    prompt: Any
    document: str
    n_nodes: int
    n_links: int
    n_pinned: int
    n_link_extras: int
    source: str
    levels: int | None
    default: _Default


@dataclass(frozen=True)
class _Default:
    """What the stored view at the default node threshold needs: its node count ``k``,
    and roles and token probabilities by nid."""

    k: int
    roles: np.ndarray
    token_prob: np.ndarray


def _node_table(rows: list[dict[str, Any]], order: np.ndarray, roles: np.ndarray,
                scores: np.ndarray, cum: np.ndarray, heights: np.ndarray | None) -> pa.Table:
    ordered = [rows[i] for i in order]
    cols: dict[str, Any] = {
        "nid": pa.array(np.arange(len(order), dtype=np.int32)),
        "idx": pa.array(order.astype(np.int32)),
        "node_id": pa.array([r["node_id"] for r in ordered], pa.string()),
    }
    types = {c.name: c.type for c in t.attribution_nodes.columns}
    for name in NODE_COLUMNS:
        cols[name] = pa.array([r[name] for r in ordered], _arrow_type(types[name]))
    cols["role"] = pa.array(roles[order].astype(np.int16))
    cols["score"] = pa.array(scores[order])
    cols["cum"] = pa.array(cum[order])
    cols["height"] = pa.nulls(len(order), pa.int16()) if heights is None else pa.array(heights)
    cols["absent"] = pa.array([r["absent"] for r in ordered], pa.int32())
    cols["extra"] = pa.array([r["extra"] for r in ordered], pa.string())
    return pa.table(cols)


def _arrow_type(sql_type: Any) -> pa.DataType:
    name = type(sql_type).__name__
    return {"String": pa.string(), "Text": pa.string(), "Integer": pa.int32(),
            "BigInteger": pa.int64(), "Double": pa.float64(), "Boolean": pa.bool_()}[name]


def _sparse_text(n: int, items: list[tuple[int, str]]) -> pa.Array:
    if not items:
        return pa.nulls(n, pa.string())
    values: list[str | None] = [None] * n
    for i, value in items:
        values[i] = value
    return pa.array(values, pa.string())


class _SortedLinks:
    """The links by nid, handed out as Arrow tables in a stored order one at a time (a
    radix sort in numpy: no database sort, no second copy held while the first is
    written). ``heights`` by nid, when known, order the links by target first by the
    target's height."""

    def __init__(self, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                 extras: list[tuple[int, str]], n_nodes: int,
                 heights: np.ndarray | None) -> None:
        self.source, self.target, self.weight = source, target, weight
        self.extras, self.n_nodes, self.heights = extras, n_nodes, heights

    def by(self, key: str) -> pa.Table:
        """``attribution_links`` (``key`` target: with extras and target heights) or
        ``attribution_out_links`` (``key`` source)."""
        if key == "source":
            order = pruning.group_order(self.source, self.n_nodes)
        elif self.heights is None:
            order = pruning.group_order(self.target, self.n_nodes)
        else:  # rank of each node in (height, nid) order: one key, one radix sort
            small = np.uint16 if self.n_nodes <= 1 << 16 else np.int32  # as group_order sorts
            rank = np.empty(self.n_nodes, small)
            rank[np.lexsort((np.arange(self.n_nodes), self.heights))] = np.arange(
                self.n_nodes, dtype=small)
            order = pruning.group_order(rank[self.target], self.n_nodes)
        cols = {"idx": pa.array(order.astype(np.int32)),
                "source": pa.array(self.source[order]), "target": pa.array(self.target[order]),
                "weight": pa.array(self.weight[order])}
        if key == "target":
            cols["extra"] = _sparse_text(order.size, self.extras).take(pa.array(order))
            cols["target_height"] = (pa.nulls(order.size, pa.int16()) if self.heights is None
                                     else pa.array(self.heights[cols["target"].to_numpy()]))
        return pa.table(cols)


def _write(target: DatabaseTarget, info: _GraphInfo, node_table: pa.Table,
           links: _SortedLinks, replace: bool) -> bool:
    by_target = links.by("target")  # built before the file is held for writing
    pruned = None if links.heights is None else pruned_links(
        by_target, info.default.k, links.heights, info.default.roles, info.default.token_prob)
    engine = create_db_engine(target, read_only=False)
    try:
        with begin_writing(engine, target) as conn:
            ensure_schema(conn, target)
            t.metadata.create_all(conn, tables=list(t.ATTRIBUTION_TABLES), checkfirst=True)
            t.add_missing_columns(conn)
            g = t.attribution_graphs.c
            old = conn.execute(select(g.graph_id).where(
                g.slug == info.slug, g.model == info.model)).first()
            if old is not None and not replace:
                raise GraphExistsError(
                    f"{target}: model {info.model!r} already has an attribution graph with "
                    f"slug {info.slug!r}. Pass --replace to overwrite it (graphs of other "
                    "models are left alone).")
            if old is not None:
                for table in t.GRAPH_TABLES:
                    conn.execute(delete(table).where(table.c.graph_id == old[0]))
            graph_id = conn.execute(insert(t.attribution_graphs).values(
                slug=info.slug, model=info.model,
                prompt=info.prompt if isinstance(info.prompt, str) else None,
                document=info.document, n_nodes=info.n_nodes, n_links=info.n_links,
                n_pinned=info.n_pinned, n_link_extras=info.n_link_extras,
                source=info.source, levels=info.levels,
                pruned_k=None if pruned is None else info.default.k,
                imported_at=dt.datetime.now(dt.UTC),
                headgraph_version=__version__,
            ).returning(t.attribution_graphs.c.graph_id)).scalar_one()
            gid = {"graph_id": graph_id}
            insert_arrow(conn, t.attribution_nodes, node_table, constants=gid)
            insert_arrow(conn, t.attribution_links, by_target, constants=gid)
            if pruned is not None:
                insert_arrow(conn, t.attribution_pruned_links, pruned, constants=gid)
            del by_target, pruned
            insert_arrow(conn, t.attribution_out_links, links.by("source"), constants=gid)
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=False)
    finally:
        engine.dispose()
    return old is not None
