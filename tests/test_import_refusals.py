"""Input that cannot be stored or served is refused at import, with one coded line that says
what to do, and the database is left as it was: numbers that are not finite, slugs and
model names no URL can carry, values nested without end, lone surrogates, binary and
pickle files; and a file bloated with blanks is read in bounded memory."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headgraph.attribution import jsonstream
from headgraph.attribution.importer import import_graph
from headgraph.attribution.synth import SynthSpec, graph_document
from headgraph.cli import app
from headgraph.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


def small() -> dict:
    return graph_document(SynthSpec(n_links=60, n_features=12, seed=11))


def write(tmp_path: Path, doc: dict | str, name: str = "g.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def stored(db: Path) -> list:
    if not db.exists():
        return []
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT model, slug, n_links FROM attribution_graphs "
                           "ORDER BY slug").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stored graph, which no refusal may change (checked after each)."""
    folder = tmp_path_factory.mktemp("refusals")
    path = folder / "hg.duckdb"
    import_graph(write(folder, small(), "first.json"), path)
    return path


def refused(path: Path, db: Path, match: str, **kw) -> None:
    before = stored(db)
    with pytest.raises(BadInputError, match=match) as err:
        import_graph(path, db, **kw)
    assert "\n" not in str(err.value) and err.value.code
    assert stored(db) == before


# --- numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_a_link_weight_that_is_not_finite_is_refused(tmp_path, db, text):
    doc = small()
    doc["metadata"]["slug"] = "bad"
    raw = json.dumps(doc).replace(json.dumps(doc["links"][7]["weight"]), text, 1)
    refused(write(tmp_path, raw), db, "not finite")


@pytest.mark.parametrize("where", ["influence", "activation", "metadata"])
def test_any_other_number_that_is_not_finite_is_refused(tmp_path, db, where):
    doc = small()
    doc["metadata"]["slug"] = "bad"
    if where == "metadata":
        doc["metadata"]["node_threshold"] = "@@"
    else:
        doc["nodes"][10][where] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', "NaN")), db, "not finite")
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', "1e999")), db, "not finite")


def test_an_integer_weight_beyond_a_double_is_refused(tmp_path, db):
    doc = small()
    doc["metadata"]["slug"] = "bad"
    doc["links"][3]["weight"] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', "1" + "0" * 400)), db,
            "not finite|beyond")


# --- names ----------------------------------------------------------------------------

@pytest.mark.parametrize("slug", ["../../etc/passwd", "..", "", "bell\x07", "a/b", "x" * 20_000,
                                  " padded", "tab\there", "\u2028sep", "back\\slash"])
def test_a_slug_no_url_can_carry_is_refused(tmp_path, db, slug):
    doc = small()
    doc["metadata"]["slug"] = slug
    refused(write(tmp_path, doc), db, "slug")


def test_a_lone_surrogate_is_refused(tmp_path, db):
    doc = small()
    doc["metadata"]["slug"] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', '"x\\ud800"')), db, "slug")
    doc["metadata"]["slug"] = "ok"
    doc["nodes"][9]["clerp"] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', '"\\udfff tail"')), db,
            "surrogate")
    doc["nodes"][9]["clerp"] = "fine"
    doc["metadata"]["info"] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', '"\\ud83d"')), db, "surrogate")


def test_a_lone_surrogate_is_refused_on_postgresql(tmp_path, pg_url):
    doc = small()
    doc["nodes"][9]["clerp"] = "@@"
    path = write(tmp_path, json.dumps(doc).replace('"@@"', '"\\udfff"'))
    with pytest.raises(BadInputError, match="surrogate"):
        import_graph(path, pg_url)
    doc["nodes"][9]["clerp"] = "\U0001f600 a real pair"
    import_graph(write(tmp_path, doc), pg_url)


@pytest.mark.parametrize("model", ["../x", "a//b", "tab\tmodel", "", "m" * 300, "..", "a\\b"])
def test_a_model_name_no_url_can_carry_is_refused(tmp_path, db, model):
    doc = small()
    doc["metadata"]["slug"] = "other"
    refused(write(tmp_path, doc), db, "model name", model=model)


# --- structure ------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [jsonstream.MAX_NESTING + 1, 200_000])
@pytest.mark.parametrize("where", ["metadata", "node", "link"])
def test_values_nested_too_deep_are_refused(tmp_path, db, depth, where):
    doc = small()
    doc["metadata"]["slug"] = "deep"
    deep = "[" * depth + "]" * depth
    target = {"metadata": doc["metadata"], "node": doc["nodes"][5], "link": doc["links"][5]}
    target[where]["deep"] = "@@"
    refused(write(tmp_path, json.dumps(doc).replace('"@@"', deep)), db, "nests values")


def test_one_element_longer_than_the_cap_is_refused(tmp_path, db, monkeypatch):
    monkeypatch.setattr(jsonstream, "MAX_ELEMENT", 1 << 20)
    doc = small()
    doc["metadata"]["slug"] = "long"
    doc["nodes"][4]["clerp"] = "@@"
    text = json.dumps(doc).replace('"@@"', " " * (3 << 20) + '"x"')
    refused(write(tmp_path, text), db, "longer than", chunk=1 << 16)


def test_blanks_between_and_after_elements_are_read_at_any_length(tmp_path):
    """Runs of blanks (many times the read window) after an element, before its comma,
    between elements and before the end of the array: all valid JSON, all read."""
    doc = small()
    doc["metadata"]["slug"] = "blanks"
    text = json.dumps(doc)
    pad = " \n\t" * 3_000_000  # 9 MB: more than a read window of the importer's
    first = json.dumps(doc["links"][0])
    last = json.dumps(doc["links"][-1])
    text = text.replace(first + ",", first + pad + "," + pad, 1).replace(last + "]", last + pad + "]")
    path = write(tmp_path, text)
    for workers in (0, 2):
        report = import_graph(path, tmp_path / "blanks.duckdb", replace=True, workers=workers)
        assert report.rows["links"] == 60


@pytest.mark.slow
def test_a_file_with_a_gigabyte_of_blanks_is_read_in_bounded_memory(tmp_path):
    """512 MB of blanks between two links, and as many before the comma after a link: the
    import's peak resident memory stays under 400 MB (a window of blanks at a time), where
    holding the blanks would take gigabytes."""
    doc = small()
    head, _, tail = json.dumps(doc).partition(json.dumps(doc["links"][10]) + ",")
    path = tmp_path / "blanks.json"
    with path.open("w") as f:
        f.write(head + json.dumps(doc["links"][10]))
        for _ in range(64):
            f.write(" " * (8 << 20))
        f.write(",")
        for _ in range(64):
            f.write("\n" * (8 << 20))
        f.write(tail)
    # VmHWM, the peak of this process image: ru_maxrss would count the pages of the big
    # test process this child was forked from, before its exec
    code = ("import re, sys; from headgraph.attribution.importer import import_graph; "
            "r = import_graph(sys.argv[1], sys.argv[2]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]; "
            "print(r.rows['links'], hwm)")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "b.duckdb")],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    links, peak_kb = int(out[0]), int(out[1])
    assert links == 60
    assert peak_kb < 400 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"


# --- files that are not graphs or circuits --------------------------------------------

def test_binary_and_pickle_files_get_one_coded_line(tmp_path):
    import safetensors.torch
    import torch

    db = tmp_path / "x.duckdb"
    files = {}
    safetensors.torch.save_file({"w": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    files["model.safetensors"] = "headgraph ingest"
    (tmp_path / "any.pkl").write_bytes(pickle.dumps({"a": 1}))
    files["any.pkl"] = "never loads"
    (tmp_path / "g.json.gz").write_bytes(gzip.compress(b'{"metadata": {}}'))
    files["g.json.gz"] = "gunzip"
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 8)
    files["blob.bin"] = "binary file"
    (tmp_path / "latin.txt").write_bytes("caf\xe9 -> b\n".encode("latin-1") * 3)
    files["latin.txt"] = "binary file"
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    files["tensor.pt"] = "not one of the circuits"
    (tmp_path / "empty.txt").write_text("")
    files["empty.txt"] = "no edges"
    write(tmp_path, {"graphs": [{"slug": "a"}]}, "graph-metadata.json")
    files["graph-metadata.json"] = "index of graphs"
    circuits = {"tensor.pt", "empty.txt"}  # circuit formats: without --model, that is said
    for name, message in files.items():
        for extra in ([], ["--model", "toy"]):
            result = CliRunner().invoke(app, ["import", "--db", str(db), str(tmp_path / name),
                                              *extra])
            lines = result.output.strip().splitlines()
            expected = "--model" if name in circuits and not extra else message
            assert result.exit_code == 2, (name, result.output)
            assert len(lines) == 1 and lines[0].startswith("error ["), (name, result.output)
            assert expected in lines[0], (name, extra, lines[0])
    assert not db.exists()  # no refusal opened the database
