"""The API without HTTP: the ``headgraph query`` / ``serve`` commands, DataLoader batching
(counted SQL statements), the settings table, error coding, and a torch-free import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from graphql import GraphQLError
from support import count_statements
from typer.testing import CliRunner

from headgraph.api.errors import coded
from headgraph.api.execute import Service
from headgraph.api.settings import SETTINGS, Settings, parse_pairs
from headgraph.cli import app
from headgraph.errors import BadInputError, NodeNotFoundError
from headgraph.server import serve

README_QUERY = ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) '
                '{ source { name } score } } }')


# --- headgraph query ------------------------------------------------------------------

runner = CliRunner()


def test_query_prints_the_json_response(toy_db: Path):
    r = runner.invoke(app, ["query", "--db", str(toy_db), README_QUERY])
    assert r.exit_code == 0, r.output
    feeders = json.loads(r.stdout)["data"]["node"]["feeders"]
    assert len(feeders) == 3 and set(feeders[0]) == {"source", "score"}


def test_query_takes_variables_and_stdin(toy_db: Path):
    doc = ('query($n: String!, $t: Int) { node(model: "toy", name: $n) '
           '{ readers(kind: V, top: $t) { target { name } } } }')
    r = runner.invoke(app, ["query", "--db", str(toy_db), "-", "--var", "n=L0H1",
                            "--var", "t=2"], input=doc)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["data"]["node"]["readers"]) == 2


def test_query_errors_print_codes_and_exit_1(toy_db: Path):
    r = runner.invoke(app, ["query", "--db", str(toy_db),
                            '{ node(model: "toy", name: "L9H9") { name } }'])
    assert r.exit_code == 1
    assert json.loads(r.stdout)["errors"][0]["extensions"]["code"] == "NODE_NOT_FOUND"
    r = runner.invoke(app, ["query", "--db", str(toy_db), "--setting", "max_depth=2",
                            README_QUERY])
    assert r.exit_code == 1
    assert json.loads(r.stdout)["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


def test_query_refusals_exit_with_their_status_and_one_line(toy_db: Path, tmp_path: Path):
    r = runner.invoke(app, ["query", "--db", str(tmp_path / "none.duckdb"), "{ models { name } }"])
    assert r.exit_code == 5 and "error [DATABASE_ERROR]" in r.output
    r = runner.invoke(app, ["query", "--db", str(toy_db), "--var", "novalue", "{ models { name } }"])
    assert r.exit_code == 2 and "error [BAD_INPUT]" in r.output
    r = runner.invoke(app, ["query", "--db", str(toy_db), "-s", "max_nothing=1", "{ models { name } }"])
    assert r.exit_code == 2 and "unknown setting" in r.output


def test_serve_refuses_bad_settings_before_starting(toy_db: Path):
    with pytest.raises(BadInputError, match="unknown setting"):
        serve(toy_db, port=0, max_dept=3)
    r = runner.invoke(app, ["serve", "--db", str(toy_db), "--setting", "max_depth=-1"])
    assert r.exit_code == 2 and "error [BAD_INPUT]" in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert "headgraph settings" in r.output  # one short line, not every setting twice
    r = runner.invoke(app, ["settings"])
    assert r.exit_code == 0 and all(s.name in r.output for s in SETTINGS)


# --- batching ---------------------------------------------------------------------------

NESTED = """{{ model(name: "toy") {{ heads{args} {{ name model {{ name }}
    feeders(kind: K, top: 3) {{ score source {{ name copying {{ ratio }} }} target {{ name }} }}
    readers(kind: V, top: 2) {{ target {{ name }} }}
    scores {{ value }} }} }} }}"""


def test_nested_fields_of_many_nodes_cost_a_bounded_number_of_statements(toy_db: Path):
    service = Service(toy_db)
    one, n_one = count_statements(service, NESTED.format(args="(first: 1)"))
    every, n_every = count_statements(service, NESTED.format(args=""))
    assert len(one["data"]["model"]["heads"]) == 1
    assert len(every["data"]["model"]["heads"]) >= 8
    # model, heads, feeders, readers, scores (one statement each for all heads), then the
    # endpoints not already read: the first node lookup reads all the model's nodes once
    # (GraphDB.lasting keeps them) and serves feeder sources (EMBED...)
    # and reader targets alike; with every head listed there is none left to read
    assert n_one == 6 and n_every == 6
    service.close()


def test_each_level_of_nesting_is_one_batch(toy_db: Path):
    service = Service(toy_db)
    _, n = count_statements(service, '{ model(name: "toy") { heads { feeders(kind: V) '
                                      '{ source { feeders(kind: V) { score } } } } } }')
    assert n == 5  # model, heads, their feeders, the sources not yet read, their feeders
    _, n = count_statements(service, '{ model(name: "toy") { nodes { feeders(kind: V) '
                                      '{ source { feeders(kind: V) { score } } } } } }')
    assert n == 3  # every source was listed by `nodes`, and its V-feeders already loaded
    service.close()


# --- settings and errors ----------------------------------------------------------------

def test_settings_table_matches_the_settings_defaults():
    assert {s.name: s.default for s in SETTINGS} == Settings().__dict__
    assert all(s.help.endswith(".") and len(s.help) > 20 for s in SETTINGS)


def test_settings_parse_and_refuse():
    assert Settings.of(parse_pairs(["max_depth=12", " max_first = 7 "])) == Settings(
        max_depth=12, max_first=7)
    for bad in ({"max_depth": "-1"}, {"max_depth": "x"}, {"max_depth": True}, {"nope": 1}):
        with pytest.raises(BadInputError):
            Settings.of(bad)
    with pytest.raises(BadInputError):
        parse_pairs(["max_depth"])


def test_internal_errors_are_masked_and_refusals_keep_their_code():
    bug = GraphQLError("boom at /secret/path.py", path=["model"], original_error=KeyError("x"))
    out = coded(bug)
    assert out.extensions == {"code": "INTERNAL_ERROR"} and "secret" not in out.message
    refusal = GraphQLError("x", path=["node"], original_error=NodeNotFoundError("no L9H9"))
    assert coded(refusal).formatted == {"message": "no L9H9", "path": ["node"],
                                        "extensions": {"code": "NODE_NOT_FOUND"}}
    assert coded(GraphQLError("Syntax Error: x")).extensions == {"code": "BAD_INPUT"}


def test_the_read_side_imports_without_torch():
    code = ("import sys, time; t = time.perf_counter(); import headgraph.api.app, "
            "headgraph.server, headgraph.cli.serve, headgraph.notebook, "
            "headgraph.queries.edges, headgraph.queries.scores, headgraph.cli, headgraph; "
            "bad = {'torch', 'transformer_lens', 'transformers'} & set(sys.modules); "
            "assert not bad, bad; print(time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 3.0  # well under a second unloaded; slack for a busy machine


def test_scores_and_families_once_they_exist(toy_db: Path, tmp_path: Path):
    import duckdb

    path = tmp_path / "more.duckdb"
    shutil.copy(toy_db, path)
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO node_scores SELECT model_id, 'L1H2', m, p, v FROM models, "
                    "(VALUES ('induction', 'repeat', 0.875), ('prev_token', 'natural', 0.25)) "
                    "t(m, p, v)")
        con.execute("INSERT INTO models SELECT * REPLACE (model_id + 100 AS model_id, "
                    "'toy@2' AS name, 'run' AS family, 2 AS step) FROM models")
    service = Service(path)
    body = service.execute_sync('{ node(model: "toy", name: "L1H2") { all: scores '
                                 '{ metric probe value } natural: scores(probe: "natural") '
                                 '{ metric } } models(family: "run") { name family step } }').body
    service.close()
    assert body["data"]["node"]["all"] == [
        {"metric": "induction", "probe": "repeat", "value": 0.875},
        {"metric": "prev_token", "probe": "natural", "value": 0.25}]
    assert body["data"]["node"]["natural"] == [{"metric": "prev_token"}]
    assert body["data"]["models"] == [{"name": "toy@2", "family": "run", "step": 2}]
