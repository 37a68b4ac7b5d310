"""Table definitions (SQLAlchemy Core). The DuckDB file is a public interface: users open
it with ``duckdb`` and SQL, so these names and meanings are fixed.

``models``      one row per stored model (a checkpoint is a model with a family and step).
``nodes``       one row per component: heads ``L{l}H{h}``, ``MLP{l}``, ``EMBED``,
                ``POS_EMBED``, ``UNEMBED``; per-node metrics (NULL where they don't apply).
``edges``       one row per ordered (source, target, kind): ``score = ‖W M‖/(‖W‖‖M‖)``,
                ``baseline`` the mean of that score under the Gaussian null of the same
                shapes (``null_std`` its spread), ``rank`` 1 for the strongest source of
                the target in that kind.
``node_scores`` evidence from running the model (role scores, ablation effects).
``edge_scores`` causal evidence on edges (path patching, discovered circuits).
``virtual_heads`` V-composition chains of 2-3 heads scored exactly as one OV circuit.
``baselines``   the Gaussian null per edge type, cached across models of one shape.
``meta``        key/value: the schema version.

Portability notes (STACK-NOTES.md): ``REAL`` is 4 bytes on both DuckDB and PostgreSQL;
autoincrement keys use an explicit ``Sequence``; big tables carry no primary key
(DuckDB's ART index would cost more than the table and not speed lookups up: edges are
written sorted by (model, target, kind, rank) so zone maps serve feeder lookups).
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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

edges = Table(
    "edges",
    metadata,
    Column("model_id", Integer, nullable=False),
    Column("source", String, nullable=False),
    Column("target", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("score", REAL, nullable=False),
    Column("baseline", REAL, nullable=False),
    Column("null_std", REAL),
    Column("rank", Integer, nullable=False),
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

# "Feeders of a target by kind" and "readers of a source by kind". On PostgreSQL these are
# covering B-tree indexes; on DuckDB sorted storage and zone maps serve the same lookups
# (an ART index there costs 2.6x the table and was not faster: STACK-NOTES.md).
Index("edges_feeders", edges.c.model_id, edges.c.target, edges.c.kind, edges.c.rank,
      postgresql_include=["source", "score", "baseline", "null_std"]).ddl_if(dialect="postgresql")
Index("edges_readers", edges.c.model_id, edges.c.source, edges.c.kind, edges.c.score.desc(),
      postgresql_include=["target", "baseline", "null_std", "rank"]).ddl_if(dialect="postgresql")
Index("nodes_model", nodes.c.model_id, nodes.c.node).ddl_if(dialect="postgresql")
Index("node_scores_node", node_scores.c.model_id, node_scores.c.node).ddl_if(dialect="postgresql")
Index("edge_scores_edge", edge_scores.c.model_id, edge_scores.c.target, edge_scores.c.kind
      ).ddl_if(dialect="postgresql")
Index("virtual_heads_model", virtual_heads.c.model_id).ddl_if(dialect="postgresql")
