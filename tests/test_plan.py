"""``headgraph plan`` tells the truth about the stages: the same list an ingest reports,
each a number, the null stage empty once a shape's Gaussian null is cached, and the
FLOPs of the shapes that tied embeddings save."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.ingest.null import edge_types
from headgraph.ingest.nullcache import missing_nulls
from headgraph.ingest.pipeline import ingest
from headgraph.ingest.plan import make_plan, shape_of, spec_of_shape, stage_flops
from headgraph.ingest.stages import STAGES

SHAPE = "random:L3H4D32V50,ctx=16"


def test_plan_lists_the_stages_an_ingest_reports(tmp_path: Path):
    result = CliRunner().invoke(app, ["ingest", SHAPE, "--db", str(tmp_path / "a.duckdb")])
    assert result.exit_code == 0, result.output
    reported = [s for s in re.findall(r"│ ([a-z ]+) \(s\)", result.output) if s != "total"]
    assert tuple(reported) == STAGES
    planned = CliRunner().invoke(app, ["plan", SHAPE])
    assert planned.exit_code == 0, planned.output
    assert tuple(re.findall(r"│ time: ([a-z ]+?) +│", planned.output)) == STAGES
    plan = make_plan(SHAPE, rate=100.0)
    assert tuple(plan.stages) == STAGES and plan.seconds == pytest.approx(
        sum(plan.stages.values()))
    assert plan.stages["probes"] == 0 < make_plan(SHAPE, rate=100.0,
                                                 probes="default").stages["probes"]
    report = ingest(SHAPE, tmp_path / "b.duckdb")
    assert tuple(report.timings) == STAGES[1:]  # "start" is the command line's own


def test_the_null_stage_counts_only_nulls_not_cached(tmp_path: Path):
    shape = "random:L2H2D24V40,ctx=8"
    types = edge_types(spec_of_shape(shape_of(shape)))
    before = make_plan(shape, rate=100.0)
    assert before.nulls_to_sample == len(missing_nulls(types)) > 0
    assert before.stages["null"] > 0
    ingest(shape, tmp_path / "n.duckdb")  # samples them and caches them on disk
    after = make_plan(shape, rate=100.0)
    assert after.nulls_to_sample == 0 and after.stages["null"] == 0


def test_the_nulls_an_ingest_samples_are_the_plans(tmp_path: Path):
    """The edge types plan enumerates are exactly the ones an ingest asks nulls for."""
    from headgraph.ingest.compose import compose
    from headgraph.ingest.null import null_key
    from headgraph.ingest.nullcache import cached_null
    from headgraph.ingest.sources import open_source

    for source in (SHAPE, "random:llama,layers=2,heads=4,kv_heads=2"):
        seen: dict = {}
        compose(open_source(source), null=cached_null(seen))
        planned = {null_key(*t) for t in edge_types(spec_of_shape(shape_of(source)))}
        assert set(seen) == planned, source


def test_tied_embeddings_need_one_vocabulary_product():
    tied = shape_of("random:gpt2-small")
    untied = tied.__class__(**{**tied.__dict__, "tied_vocab": False})
    saved = sum(stage_flops(untied).values()) - sum(stage_flops(tied).values())
    d, V = tied.d_model, tied.d_vocab
    assert saved == pytest.approx(2 * 2 * d * d * V - 6 * d**3)
