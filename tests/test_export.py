"""Exports round-trip through the readers of each format; plots are real PNGs."""

from __future__ import annotations

import io
import json
import struct

import networkx as nx
import pydot
import pytest
from support import BACKENDS, new_pg_database, sql
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import BadInputError
from headgraph.graph.export import ExportFilter, write_export
from headgraph.graph.plot import composition_heatmap, copying_chart
from headgraph.ingest.pipeline import ingest
from headgraph.queries.session import open_reader


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random model on each backend."""
    if request.param == "duckdb":
        store = str(tmp_path_factory.mktemp("export") / "e.duckdb")
    else:
        store = new_pg_database(request.getfixturevalue("pg_server"), "hg_export")
    ingest("random:L3H3D24V30,ctx=12", store, name="m")
    return store


def _expected(db: str, flt: ExportFilter) -> set[tuple[str, str, str, float]]:
    kinds = ",".join(f"'{k}'" for k in flt.kinds)
    q = f"SELECT source, target, kind, score FROM edges WHERE kind IN ({kinds})"
    if flt.min_score is not None:
        q += f" AND score >= CAST({flt.min_score} AS REAL)"
    return {(s, t, k, round(x, 6)) for s, t, k, x in sql(db, q)}


def _export(db: str, fmt: str, flt: ExportFilter) -> str:
    buf = io.StringIO()
    with open_reader(db) as r:
        write_export(r, "m", fmt, buf, flt)
    return buf.getvalue()


FILTERS = [ExportFilter(), ExportFilter(kinds=("K",), min_score=0.2)]


@pytest.mark.parametrize("flt", FILTERS, ids=["all-qkv", "k-above"])
def test_node_link_json_round_trips_through_networkx(db, flt):
    g = nx.node_link_graph(json.loads(_export(db, "json", flt)), directed=True, multigraph=True)
    got = {(u, v, d["kind"], round(d["score"], 6)) for u, v, d in g.edges(data=True)}
    assert got == _expected(db, flt)
    assert g.nodes["L1H2"]["kind"] == "head" and "copying_ratio" in g.nodes["L1H2"]


@pytest.mark.parametrize("flt", FILTERS, ids=["all-qkv", "k-above"])
def test_graphml_round_trips_through_networkx(db, flt, tmp_path):
    path = tmp_path / "g.graphml"
    path.write_text(_export(db, "graphml", flt))
    g = nx.read_graphml(path, force_multigraph=True)
    got = {(u, v, d["kind"], round(d["score"], 6)) for u, v, d in g.edges(data=True)}
    assert got == _expected(db, flt)
    assert g.nodes["L2H0"]["layer"] == 2


def test_cytoscape_json_lists_elements(db):
    data = json.loads(_export(db, "cyjs", FILTERS[0]))
    edges = {(e["data"]["source"], e["data"]["target"], e["data"]["kind"],
              round(e["data"]["score"], 6)) for e in data["elements"]["edges"]}
    assert edges == _expected(db, FILTERS[0])
    ids = [e["data"]["id"] for e in data["elements"]["edges"]]
    assert len(ids) == len(set(ids))
    assert {n["data"]["id"] for n in data["elements"]["nodes"]} >= {"EMBED", "L0H0", "UNEMBED"}


def test_dot_parses_with_pydot(db):
    (graph,) = pydot.graph_from_dot_data(_export(db, "dot", FILTERS[1]))
    got = {(e.get_source().strip('"'), e.get_destination().strip('"'),
            e.get("kind").strip('"')) for e in graph.get_edges()}
    assert got == {(s, t, k) for s, t, k, _ in _expected(db, FILTERS[1])}


def test_unknown_format_is_refused(db):
    with open_reader(db) as r, pytest.raises(BadInputError, match="format"):
        write_export(r, "m", "xlsx", io.StringIO())


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_are_real_pngs_of_the_requested_size(db):
    with open_reader(db) as r:
        heat = composition_heatmap(r, "m", "K", size=(8, 7))
        bars = copying_chart(r, "m", size=(6, 3))
    assert _png_size(heat) == (800, 700)
    assert _png_size(bars) == (600, 300)


def test_cli_export_of_a_circuit_and_plot(db, tmp_path):
    out = tmp_path / "c.json"
    result = CliRunner().invoke(app, ["export", "--db", str(db), "--model", "m", "--format",
                                      "json", "--circuit", "L2H1", "--depth", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    g = nx.node_link_graph(json.loads(out.read_text()), directed=True, multigraph=True)
    assert {v for _, v in g.edges()} == {"L2H1"}
    png = tmp_path / "k.png"
    result = CliRunner().invoke(app, ["plot", "--db", str(db), "--model", "m", "-o", str(png)])
    assert result.exit_code == 0 and _png_size(png.read_bytes())[0] > 0
