"""Table definitions (SQLAlchemy Core). The DuckDB file is a public interface: users open
it with ``duckdb`` and SQL, so these names and meanings are fixed.

``models``      one row per stored model (a checkpoint is a model with a family and step).
``nodes``       one row per component: heads ``L{l}H{h}``, ``MLP{l}``, ``EMBED``,
                ``POS_EMBED``, ``UNEMBED``; per-node metrics (NULL where they don't apply).
``edges``       one row per ordered (source, target, kind): ``score = ‖W M‖/(‖W‖‖M‖)``,
                ``baseline`` the mean of that score under the Gaussian null of the same
                shapes (``null_std`` its spread), ``rank`` 1 for the strongest source of
                the target in that kind, ``z`` how far the edge stands above what the
                model's structure explains (the calibrated banded-rotation null; NULL for
                models ingested before it was stored, or where it is undefined).
``null_calibration`` per model, kind and family of edge: the empirical-null centre
                ``delta`` and scale ``phi`` that calibrate ``edges.z``
                (``models.null_bands`` holds the null's band sizes).
``node_scores`` evidence from running the model (role scores, ablation effects).
``edge_scores`` causal evidence on edges (path patching, discovered circuits).
``evidence_agreement`` per model and probe, how well an estimate (attribution patching,
                EAP-IG) agrees with the exact measurement where both are stored.
``virtual_heads`` V-composition chains of 2-3 heads scored exactly as one OV circuit.
``baselines``   the Gaussian null per edge type, cached across models of one shape.
``meta``        key/value: the schema version.

Evidence from other tools (:mod:`headgraph.attribution.importer`, :mod:`headgraph.circuits.formats`):

``attribution_graphs``     one row per imported circuit-tracer / Neuronpedia graph (``slug``
                           unique per ``model``, as Neuronpedia keys graphs); ``document``
                           keeps every top-level field but nodes/links.
``attribution_nodes``      its nodes; ``nid`` is the node's rank in keep order (tokens and
                           logits first, then by computed influence), ``idx`` its file
                           position, ``height`` the most links on a path to a sink.
``attribution_links``      its links by node ``nid``, stored sorted by (graph,
                           ``target_height``, target): a pruned view reads the links
                           between the first ``K`` nids height by height, a node's
                           in-links are one zone (:mod:`headgraph.attribution.pruning`).
``attribution_out_links``  the same links sorted by (graph, source): a node's out-links.
``attribution_pruned_links`` the links between the nodes kept at the default node threshold
                           (``attribution_graphs.pruned_k`` of them) with their edge scores
                           on that pruned graph, sorted by edge score, largest first, and the
                           share of the total held by the links before each: a pruned view at
                           that node threshold is a filter at any edge threshold.
``circuits``               one row per imported head-level circuit (ACDC, auto-circuit,
                           EAP-IG); its edges are ``edge_scores`` rows (metric ``tool:...``,
                           probe ``task:<name>``).

Portability notes (docs/engines.md): ``REAL`` is 4 bytes on both DuckDB and PostgreSQL;
autoincrement keys use an explicit ``Sequence``; big tables carry no primary key
(DuckDB's ART index would cost more than the table and not speed lookups up: edges are
written sorted by (model, target, kind, rank) so zone maps serve feeder lookups).

PostgreSQL differences, all declared here (the DuckDB schema is the plain one):

* ``edges`` is LIST-partitioned by ``model_id``, one partition per model
  (:mod:`headgraph.schema.partitions` writes, attaches and removes them), each with the
  two covering indexes of :data:`EDGE_INDEXES`;
* the name columns of ``edges`` (source, target, kind) use the "C" collation: byte order,
  as DuckDB sorts strings, whatever the server's default locale; and sorting by it is what
  building the covering indexes mostly does (about twice as fast as a libc locale's).
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn, CreateTable

SCHEMA_VERSION = 1

metadata = MetaData()

model_id_seq = Sequence("models_model_id_seq", metadata=metadata)

models = Table(
    "models",
    metadata,
    Column("model_id", Integer, model_id_seq, server_default=model_id_seq.next_value(),
           primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("family", String),
    Column("step", Integer),
    Column("source", Text, nullable=False),
    Column("architecture", String, nullable=False),
    Column("n_layers", Integer, nullable=False),
    Column("n_heads", Integer, nullable=False),
    Column("n_kv_heads", Integer, nullable=False),
    Column("d_model", Integer, nullable=False),
    Column("d_head", Integer, nullable=False),
    Column("d_mlp", Integer, nullable=False),
    Column("d_vocab", Integer),
    Column("n_ctx", Integer),
    Column("position_scheme", String),
    Column("parallel_blocks", Boolean),
    Column("readout", String),
    Column("processing", String, nullable=False),
    Column("weights_digest", String, nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("headgraph_version", String, nullable=False),
    Column("n_nodes", Integer, nullable=False),
    Column("n_edges", Integer, nullable=False),
    # the structural null's band sizes ("3,64,291,185,33"; "+1": a centred model's ones
    # direction); NULL: ingested before headgraph stored the structural null (no edges.z)
    Column("null_bands", String),
)

nodes = Table(
    "nodes",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("node", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("layer", SmallInteger),
    Column("head", SmallInteger),
    Column("kv_head", SmallInteger),
    Column("qk_norm", REAL),
    Column("ov_norm", REAL),
    Column("copying_positive_fraction", REAL),
    Column("copying_ratio", REAL),
    Column("in_norm", REAL),
    Column("out_norm", REAL),
    UniqueConstraint("model_id", "node", name="nodes_model_node"),
)

BYTE_ORDER = {"postgresql_collation": "C"}
"""Column ``info`` of the names in ``edges``: byte order ("C") on PostgreSQL. It is set in
the DDL only, never in the column type: a type with a collation makes SQLAlchemy cast
every bound value to it, and a comparison in "C" cannot use the indexes of a database
made before, whose columns have the server's default collation."""

edges = Table(
    "edges",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("source", String, nullable=False, info=BYTE_ORDER),
    Column("target", String, nullable=False, info=BYTE_ORDER),
    Column("kind", String, nullable=False, info=BYTE_ORDER),
    Column("score", REAL, nullable=False),
    Column("baseline", REAL, nullable=False),
    Column("null_std", REAL),
    Column("rank", Integer, nullable=False),
    Column("z", REAL),  # calibrated structural z (headgraph.ingest.structural)
    info={"postgresql_partition_by": "LIST (model_id)"},
)

null_calibration = Table(
    "null_calibration",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("kind", String, nullable=False),
    Column("family", String, nullable=False),  # head->head, dense->head, head->dense, ...
    Column("edges", Integer, nullable=False),  # edges of this kind and family with a z
    Column("delta", Double, nullable=False),  # median raw z
    Column("phi", Double, nullable=False),  # max(1, 1.4826 MAD of raw z)
    Column("basis", String, nullable=False),  # own, "<kind> head->head", ..., analytic
)

node_scores = Table(
    "node_scores",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("node", String, nullable=False),
    Column("metric", String, nullable=False),
    Column("probe", String, nullable=False),
    Column("value", REAL, nullable=False),
)

edge_scores = Table(
    "edge_scores",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("source", String, nullable=False),
    Column("target", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("metric", String, nullable=False),
    Column("probe", String, nullable=False),
    Column("value", REAL, nullable=False),
)

evidence_agreement = Table(
    "evidence_agreement",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("probe", String, nullable=False),
    Column("quantity", String, nullable=False),  # the exact metric, e.g. ablation_mean_dloss
    Column("method", String, nullable=False),  # attribution | integrated_gradients
    Column("n", Integer, nullable=False),  # heads (or edges) with both numbers
    Column("spearman", REAL),  # rank correlation over those n (NULL below 3)
    Column("k", Integer, nullable=False),  # min(10, n)
    Column("overlap", Integer, nullable=False),  # |top-k by |estimate| ∩ top-k by |exact||
)

virtual_heads = Table(
    "virtual_heads",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("heads", String, nullable=False),  # "L0H1,L1H2": the chain, first head first
    Column("length", SmallInteger, nullable=False),
    Column("score", REAL, nullable=False),
    Column("heuristic", REAL, nullable=False),
    Column("copying_positive_fraction", REAL),
    Column("copying_ratio", REAL),
)

baselines = Table(
    "baselines",
    metadata,
    Column("key", String, primary_key=True),
    Column("mean", REAL, nullable=False),
    Column("std", REAL, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)

graph_id_seq = Sequence("attribution_graphs_graph_id_seq", metadata=metadata)

attribution_graphs = Table(
    "attribution_graphs",
    metadata,
    Column("graph_id", Integer, graph_id_seq, server_default=graph_id_seq.next_value(),
           primary_key=True),
    Column("slug", String, nullable=False),  # unique per model (attribution_graphs_model_slug)
    Column("model", String, nullable=False),  # --model, or the model metadata.scan names
    Column("prompt", Text),
    Column("document", Text, nullable=False),  # JSON: the file less its nodes and links
    Column("n_nodes", Integer, nullable=False),
    Column("n_links", BigInteger, nullable=False),
    Column("n_pinned", Integer, nullable=False),  # tokens + logits: nids 0..n_pinned-1
    Column("n_link_extras", BigInteger, nullable=False),  # links with fields beyond the three
    # 1 + the greatest node height: links are stored grouped by target height. NULL for
    # graphs stored before heights (sorted by target only; views fall back to a slower path)
    Column("levels", Integer),
    # nodes kept at the default node threshold, whose pruned links are stored (NULL: none)
    Column("pruned_k", Integer),
    Column("source", Text, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("headgraph_version", String, nullable=False),
    UniqueConstraint("model", "slug", name="attribution_graphs_model_slug"),
)

attribution_nodes = Table(
    "attribution_nodes",
    metadata,
    Column("graph_id", Integer, nullable=False),
    Column("nid", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("node_id", String, nullable=False),
    Column("layer", String),
    Column("ctx_idx", Integer),
    Column("feature", BigInteger),
    Column("feature_type", String),
    Column("js_node_id", String),
    Column("clerp", Text),
    Column("activation", Double),
    Column("influence", Double),  # as in the file
    Column("token_prob", Double),
    Column("is_target_logit", Boolean),
    Column("role", SmallInteger, nullable=False),  # 0 feature, 1 error, 2 token, 3 logit
    Column("score", Double, nullable=False),  # computed influence on the whole graph
    Column("cum", Double, nullable=False),  # cumulative share of influence, largest first
    Column("height", SmallInteger),  # most links on a path to a sink (NULL: stored before)
    Column("absent", Integer, nullable=False),  # bit i: standard field i not in the file
    Column("extra", Text),  # JSON object of the node's other fields, NULL if none
)

attribution_links = Table(
    "attribution_links",
    metadata,
    Column("graph_id", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("source", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("weight", Double, nullable=False),
    Column("extra", Text),
    Column("target_height", SmallInteger),  # the target's height (NULL: stored before)
)

attribution_out_links = Table(
    "attribution_out_links",
    metadata,
    Column("graph_id", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("source", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("weight", Double, nullable=False),
)

attribution_pruned_links = Table(
    "attribution_pruned_links",
    metadata,
    Column("graph_id", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("source", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("weight", Double, nullable=False),
    Column("edge_score", Double, nullable=False),  # E on the graph pruned to pruned_k nodes
    Column("share", Double, nullable=False),  # of the sum of E, held by the links before
)

circuit_id_seq = Sequence("circuits_circuit_id_seq", metadata=metadata)

circuits = Table(
    "circuits",
    metadata,
    Column("circuit_id", Integer, circuit_id_seq, server_default=circuit_id_seq.next_value(),
           primary_key=True),
    Column("model_id", Integer, nullable=False),
    Column("tool", String, nullable=False),
    Column("task", String, nullable=False),
    Column("probe", String, nullable=False),  # "task:<task>" on its edge_scores rows
    Column("format", String, nullable=False),  # eap-ig-json | edge-list
    Column("naming", String, nullable=False),  # eap | acdc | auto-circuit
    Column("header", Text, nullable=False),  # JSON: what the format holds besides edges
    Column("n_edges", Integer, nullable=False),
    Column("n_in_graph", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("model_id", "tool", "task", name="circuits_model_tool_task"),
)

GRAPH_TABLES = (attribution_graphs, attribution_nodes, attribution_links, attribution_out_links,
                attribution_pruned_links)
"""The tables of attribution graphs, each row keyed by ``graph_id``."""
ATTRIBUTION_TABLES = (*GRAPH_TABLES, circuits)
"""Added after schema version 1: created on first use in databases that predate them."""

ADDED_COLUMNS = {"attribution_graphs": ("levels", "pruned_k"),
                 "attribution_nodes": ("height",), "attribution_links": ("target_height",),
                 "models": ("null_bands",), "edges": ("z",)}
"""Columns added to those tables later, still within schema version 1: a writer adds them
(``ALTER TABLE ... ADD COLUMN``, NULL in the rows already stored) before it writes; readers
treat NULL as "stored before" and take the slower path that needs no such column. A model
whose ``null_bands`` is NULL has no structural z: readers select NULL for its ``z``
rather than the column, which a file no newer headgraph has written to lacks."""


def add_missing_columns(conn: Connection) -> list[str]:
    """Add the :data:`ADDED_COLUMNS` that a database made by an older headgraph lacks
    (``ALTER TABLE ... ADD COLUMN`` in the caller's transaction; the rows already stored
    get NULL). Returns ``table.column`` of each one added."""
    from sqlalchemy import inspect

    seen = inspect(conn)
    added = []
    for name, columns in ADDED_COLUMNS.items():
        if not seen.has_table(name):
            continue
        have = {c["name"] for c in seen.get_columns(name)}
        for column in columns:
            if column not in have:
                sql_type = metadata.tables[name].c[column].type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {sql_type}')
                added.append(f"{name}.{column}")
    if seen.has_table("attribution_graphs") and scope_slugs_by_model(conn):
        added.append("attribution_graphs_model_slug")
    return added


def scope_slugs_by_model(conn: Connection) -> bool:
    """Give a database made when attribution-graph slugs were unique on their own
    (``UNIQUE (slug)``) the constraint of today, ``UNIQUE (model, slug)`` (Neuronpedia keys
    graphs by model and slug), in the caller's transaction; True if it had to. PostgreSQL
    swaps the constraint; DuckDB cannot drop one, so the small ``attribution_graphs`` table
    (one row per graph) is rebuilt under the same name with the same rows and ids. Readers
    need nothing: an old file reads as before."""
    if conn.dialect.name == "postgresql":
        old = [r[0] for r in conn.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'attribution_graphs'::regclass "
            "AND contype = 'u' AND pg_get_constraintdef(oid) = 'UNIQUE (slug)'")]
        for name in old:
            conn.exec_driver_sql(f'ALTER TABLE attribution_graphs DROP CONSTRAINT "{name}"')
        if old:
            conn.exec_driver_sql("ALTER TABLE attribution_graphs ADD CONSTRAINT "
                                 "attribution_graphs_model_slug UNIQUE (model, slug)")
        return bool(old)
    unique = [list(r[0]) for r in conn.exec_driver_sql(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = "
        "'attribution_graphs' AND constraint_type = 'UNIQUE'")]
    if ["slug"] not in unique:
        return False
    columns = ", ".join(f'"{c.name}"' for c in attribution_graphs.columns)
    conn.exec_driver_sql("ALTER TABLE attribution_graphs RENAME TO attribution_graphs_before")
    metadata.create_all(conn, tables=[attribution_graphs], checkfirst=True)
    conn.exec_driver_sql(f"INSERT INTO attribution_graphs ({columns}) SELECT {columns} "
                         "FROM attribution_graphs_before")
    conn.exec_driver_sql("DROP TABLE attribution_graphs_before")
    return True


EDGE_INDEXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "feeders": (("target", "kind", "rank"),
                ("source", "score", "baseline", "null_std", "z", "model_id")),
    "readers": (("source", "kind", "-score"),
                ("target", "baseline", "null_std", "rank", "z", "model_id")),
}
"""The indexes of each model's partition of ``edges`` (PostgreSQL): key columns ("-" for
descending) and included columns.

"Feeders of a target by kind" and "readers of a source by kind", covering, so a lookup
reads only the index. They live on the partitions, not on ``edges``: every query names
its model, so it is pruned to one partition, and without ``model_id`` (constant there)
as the first key the index build sorts on the name with abbreviated keys, 1.5-2x
faster. ``model_id`` is still included: the planner does not drop the query's
``model_id = ...`` as implied by the partition, and without it an index-only scan is
impossible. Databases made before partitioning carry the same two indexes on the whole table
with ``model_id`` first (``edges_feeders``, ``edges_readers``). On DuckDB sorted storage
and zone maps serve the same lookups (an ART index there costs 2.6x the table and was not
faster: docs/engines.md)."""


def edge_indexes(table: Table) -> list[Index]:
    """The :data:`EDGE_INDEXES` of ``table``, a partition of ``edges``, named
    ``{table}_feeders`` and ``{table}_readers``. Pages are filled whole: a partition is
    never updated (a replace deletes it all), so the default 10% room is waste."""
    out = []
    for name, (keys, included) in EDGE_INDEXES.items():
        cols = [table.c[k[1:]].desc() if k.startswith("-") else table.c[k] for k in keys]
        out.append(Index(f"{table.name}_{name}", *cols, postgresql_include=list(included),
                         postgresql_with={"fillfactor": 100}))
    return out


# PostgreSQL-only DDL from ``info`` (the dialect options ``postgresql_partition_by`` and
# ``String(collation=...)`` would do, but duckdb-engine derives from the PostgreSQL
# dialect and would emit them on DuckDB too; and see BYTE_ORDER).
@compiles(CreateTable, "postgresql")
def _create_partitioned(element: CreateTable, compiler, **kw) -> str:
    """``CREATE TABLE ... PARTITION BY`` for tables whose ``info`` names a partition key."""
    ddl = compiler.visit_create_table(element, **kw)
    by = element.element.info.get("postgresql_partition_by")
    return f"{ddl.rstrip()} PARTITION BY {by}\n\n" if by else ddl


@compiles(CreateColumn, "postgresql")
def _create_collated(element: CreateColumn, compiler, **kw) -> str:
    """``name TYPE COLLATE "C" ...`` for columns whose ``info`` names a collation."""
    ddl = compiler.visit_create_column(element, **kw)
    column = element.element
    collation = column.info.get("postgresql_collation")
    if not collation:
        return ddl
    head = f"{compiler.preparer.format_column(column)} {compiler.type_compiler.process(column.type)}"
    if not ddl.startswith(head):
        raise ValueError(f"cannot place COLLATE in {ddl!r}")
    return f'{head} COLLATE "{collation}"{ddl[len(head):]}'


Index("nodes_model", nodes.c.model_id, nodes.c.node).ddl_if(dialect="postgresql")
Index("node_scores_node", node_scores.c.model_id, node_scores.c.node).ddl_if(dialect="postgresql")
Index("edge_scores_edge", edge_scores.c.model_id, edge_scores.c.target, edge_scores.c.kind
      ).ddl_if(dialect="postgresql")
Index("virtual_heads_model", virtual_heads.c.model_id).ddl_if(dialect="postgresql")
Index("attribution_nodes_graph", attribution_nodes.c.graph_id, attribution_nodes.c.nid
      ).ddl_if(dialect="postgresql")
Index("attribution_links_in", attribution_links.c.graph_id, attribution_links.c.target,
      attribution_links.c.source).ddl_if(dialect="postgresql")
Index("attribution_out_links_out", attribution_out_links.c.graph_id,
      attribution_out_links.c.source).ddl_if(dialect="postgresql")
Index("attribution_pruned_links_score", attribution_pruned_links.c.graph_id,
      attribution_pruned_links.c.edge_score.desc()).ddl_if(dialect="postgresql")


def score_at_least(threshold: float):
    """``edges.score >= threshold`` compared as REAL, the column's type. Scores are shown
    as their shortest decimal (0.24818276); as a double that is not the stored float4,
    and PostgreSQL would then drop the very edge whose score was typed back."""
    return edges.c.score >= cast(threshold, REAL)
