"""Circuits written by the discovery tools' own code (tests/data/circuits, made on
headgraph's toy model: tests/data/README.md), imported onto the toy's edges, exported back,
and refused with one coded line where headgraph does not read them. What each file
should give is computed here from the file with the tools' own rules (their source is
quoted in headgraph/circuits), not from headgraph's reader."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from headgraph.circuits.acdc_pickle import convert, read_edges
from headgraph.circuits.export import export_circuit
from headgraph.circuits.formats import CircuitError
from headgraph.circuits.importer import import_circuit
from headgraph.cli import app
from headgraph.queries.gaps import evidence_gaps
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader

CIRCUITS = Path(__file__).parent / "data" / "circuits"
EAP, ACDC, AUTO = CIRCUITS / "eap-ig", CIRCUITS / "acdc", CIRCUITS / "auto-circuit"
RUN = "toy-induction_acdc_thr0.02"


@pytest.fixture
def toy(toy_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "toy.duckdb"
    shutil.copy(toy_db, path)
    return path


def rows(db: Path, task: str) -> dict[tuple[str, str, str, str], float]:
    con = duckdb.connect(str(db), read_only=True)
    found = con.execute("SELECT source, target, kind, metric, value FROM edge_scores WHERE "
                        "probe = ?", [f"task:{task}"]).fetchall()
    con.close()
    return {(s, t, k, m): v for s, t, k, m, v in found}


def members(db: Path, task: str, tool: str) -> set[tuple[str, str, str]]:
    return {k[:3] for k, v in rows(db, task).items() if k[3] == f"{tool}:in_graph" and v == 1}


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# --- EAP-IG ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["toy-induction_eapig-inputs_top20.json",
                                  "toy-induction_eapig-inputs_greedy20.json",
                                  "toy-induction_eap_2024format_top20.json"])
def test_eap_ig_files_import_and_export_unchanged(toy, name):
    doc = json.loads((EAP / name).read_text())
    import_circuit(EAP / name, toy, model="toy", task="t")
    with open_reader(toy) as db:
        assert json.loads(export_circuit(db, "toy", "eap-ig", "t")) == doc
    assert len(members(toy, "t", "eap-ig")) == sum(e["in_graph"] for e in doc["edges"].values())


def test_eap_igs_to_pt_is_the_same_circuit_as_its_to_json(toy):
    """to_pt saves score and membership matrices; the edges rebuilt from its cfg (a node
    feeds every later one, a layer's MLP reads its attention) are to_json's."""
    import_circuit(EAP / "toy-induction_eapig-inputs_top20.json", toy, model="toy", task="json")
    report = import_circuit(EAP / "toy-induction_eapig-inputs_top20.pt", toy, model="toy",
                            task="pt")
    assert report.rows["edges"] == 110
    a, b = rows(toy, "json"), rows(toy, "pt")
    assert {k[:3] + (k[3],): v for k, v in a.items()} == {k: v for k, v in b.items()}
    with open_reader(toy) as db:
        back = json.loads(export_circuit(db, "toy", "eap-ig", "pt"))
    assert set(back["edges"]) == set(json.loads(
        (EAP / "toy-induction_eapig-inputs_top20.json").read_text())["edges"])


def test_eap_ig_files_without_edges_are_refused_with_the_reason(toy):
    with pytest.raises(CircuitError, match="2025-02-23 to 2025-04-07"):
        import_circuit(EAP / "toy-induction_eap_2025-03-noedges.json", toy, model="toy")


# --- ACDC -----------------------------------------------------------------------------

def test_acdcs_subgraph_pth_is_its_edges_less_the_internal_ones(toy):
    """save_subgraph (.pth, read with weights_only=True) and save_edges (the pickle, read by
    convert-circuit) of one run give one circuit; ACDC's head-internal edges
    (hook_q_input -> attn.hook_q) join no two components and sit on no edge; resid_pre is
    token + position, so on the toy (learned positions) it stands for EMBED and POS_EMBED."""
    edges = read_edges(ACDC / f"{RUN}_another_final_edges.pkl")
    internal = [e for e in edges if ".attn.hook_" in e[1] and "hook_result" not in e[1]]
    assert internal and all("_input" in e[0] for e in internal)
    import_circuit(ACDC / f"{RUN}_subgraph.pth", toy, model="toy", task="pth")
    text = toy.parent / "edges.txt"
    text.write_text(convert(ACDC / f"{RUN}_another_final_edges.pkl"))
    report = import_circuit(text, toy, model="toy", task="pkl")
    assert report.rows["internal edges"] == len(internal)
    got = members(toy, "pkl", "acdc")
    assert got == members(toy, "pth", "acdc")
    from_resid_pre = [e for e in edges if e[0] == "blocks.0.hook_resid_pre[:]"]
    assert from_resid_pre
    assert {s for s, _, _ in got} >= {"EMBED", "POS_EMBED"}
    assert len(got) == len(edges) - len(internal) + len(from_resid_pre)
    with open_reader(toy) as db:
        back = export_circuit(db, "toy", "acdc", "pkl").splitlines()
    assert sorted(map(_norm, back)) == sorted(map(_norm, text.read_text().splitlines()))


def _norm(line: str) -> str:
    """An edge-list line with its score as the float32 that edge_scores keeps."""
    import numpy as np

    if line.startswith("#"):
        return line
    name, _, last = line.replace("\t", " ").rpartition(" ")
    try:
        return f"{name} {float(np.float32(float(last)))!r}"
    except ValueError:
        return line.strip()


def test_acdc_pickles_are_refused_by_import_and_read_by_convert_circuit(toy, tmp_path):
    pkl = ACDC / f"{RUN}_edges_after_step1.pkl"
    result = cli("import", "--db", str(toy), str(pkl), "--model", "toy")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "convert-circuit" in result.output and "BAD_CIRCUIT" in result.output
    out = tmp_path / "step1.txt"
    result = cli("convert-circuit", str(pkl), "-o", str(out))
    assert result.exit_code == 0, result.output
    lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    untested = [x for x in lines if " " not in x]
    assert untested and len(untested) < len(lines)  # ACDC's effect_size None after step 1
    result = cli("import", "--db", str(toy), str(out), "--model", "toy", "--task", "step1")
    assert result.exit_code == 0, result.output
    scored = {k[:3] for k in rows(toy, "step1") if k[3] == "acdc:score"}
    assert len(scored) < len(members(toy, "step1", "acdc"))


def test_a_pickle_that_is_not_acdcs_never_runs(tmp_path):
    """The converter resolves ACDC's TorchIndex and builtins.slice only: a pickle that asks
    for anything else (here: open a file) is refused, and nothing runs."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "edges.pkl"
    bad.write_bytes(pickle.dumps([(("blocks.1.hook_resid_post", Exploit(), "x", None), 1.0)]))
    result = cli("convert-circuit", str(bad))
    assert result.exit_code == 2 and "io.open" in result.output
    assert not marker.exists()
    result = cli("import", "--db", str(tmp_path / "x.duckdb"), str(bad), "--model", "toy")
    assert result.exit_code == 2 and "never loads" in result.output and not marker.exists()


def test_acdc_with_pos_embed_names_the_embeddings_apart(toy, tmp_path):
    out = tmp_path / "posembed.txt"
    out.write_text(convert(ACDC / "toy-induction_acdc_posembed_thr0.02_another_final_edges.pkl"))
    import_circuit(out, toy, model="toy", task="pe")
    import_circuit(ACDC / "toy-induction_acdc_posembed_thr0.02_subgraph.pth", toy, model="toy",
                   task="pe-pth")
    sources = {s for s, _, _ in members(toy, "pe", "acdc")}
    assert {"EMBED", "POS_EMBED"} <= sources
    assert members(toy, "pe", "acdc") == members(toy, "pe-pth", "acdc")


# --- auto-circuit ---------------------------------------------------------------------

def auto_circuit_edges(entries: list, pos_embed: bool) -> set[tuple[str, str, str]]:
    """auto-circuit's names (transformer_lens_utils.py): Resid Start is token + position,
    A{l}.{h} a head, A{l}.{h}.Q its queries, A{l}.{h} as a target all of Q, K and V."""
    out = set()
    for _, name in entries:
        src, dst = name.split("->")
        sources = (["EMBED", "POS_EMBED"] if pos_embed else ["EMBED"]) if src == "Resid Start" \
            else [src.replace("A", "L").replace(".", "H") if src.startswith("A") else
                  "MLP" + src.split()[1]]
        if dst == "Resid End":
            targets = [("UNEMBED", "UNEMBED")]
        elif dst.startswith("MLP"):
            targets = [("MLP" + dst.split()[1], "MLP")]
        else:
            parts = dst[1:].split(".")
            head = f"L{parts[0]}H{parts[1]}"
            targets = [(head, parts[2])] if len(parts) == 3 else [(head, k) for k in "QKV"]
        out |= {(s, t, k) for s in sources for t, k in targets}
    return out


@pytest.mark.parametrize("name", ["toy-induction_eap_qkv_edges.json",
                                  "toy-induction_eap_noqkv_edges.json",
                                  "toy-induction_eap_qkv_tokens_edges.json"])
def test_auto_circuit_exports_land_on_the_toys_edges(toy, name):
    """separate_qkv True and False (A{l}.{h} read through Q, K and V), and a per-token
    circuit (one entry per position: positions kept, the file back unchanged)."""
    entries = json.loads((AUTO / name).read_text())
    report = import_circuit(AUTO / name, toy, model="toy", task="t")
    assert members(toy, "t", "auto-circuit") == auto_circuit_edges(entries, pos_embed=True)
    with open_reader(toy) as db:
        assert json.loads(export_circuit(db, "toy", "auto-circuit", "t")) == entries
    tokens = any(p is not None for p, _ in entries)
    assert ("positions" in report.rows) == tokens
    if tokens:
        assert report.rows["positions"] == len(entries) > report.rows["edges"] / 2


def test_auto_circuits_prune_score_cache_is_refused_with_the_recipe(toy):
    cache = AUTO / "toy-induction_eap_noqkv_task-prune-scores-07-12-2026_09-39-59.pkl"
    result = cli("import", "--db", str(toy), str(cache), "--model", "toy")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "edges_from_mask" in result.output and "BAD_CIRCUIT" in result.output


def test_each_tools_circuit_meets_the_weights_in_evidence_gaps(toy, tmp_path):
    """The toy's strongest K edge by weights, L0H2 -> L1H2 (previous-token head into an
    induction head), and what each tool's circuit says of it."""
    out = tmp_path / "acdc.txt"
    out.write_text(convert(ACDC / f"{RUN}_another_final_edges.pkl"))
    import_circuit(out, toy, model="toy", task="induction")
    import_circuit(EAP / "toy-induction_eapig-inputs_top20.json", toy, model="toy",
                   task="induction")
    import_circuit(AUTO / "toy-induction_eap_qkv_edges.json", toy, model="toy",
                   task="induction")
    with open_reader(toy) as db:
        gaps = evidence_gaps(db, get_model(db, "toy"), "K", top=5)
    tools = {g.circuit.tool for g in gaps}
    assert tools <= {"acdc", "eap-ig", "auto-circuit"} and gaps
    assert all(g.edge.z >= 3 for g in gaps if g.gap == "absent")
    assert all(g.edge.z < 1 for g in gaps if g.gap == "weak")


def test_names_that_mean_several_edges_or_none():
    """ACDC's hook_resid_mid (old runs) is the MLP's input; its q/k/v input -> q/k/v and
    q -> result, mlp_in -> mlp_out edges are internal; auto-circuit's A1.1 as a target is
    all of Q, K and V; resid_pre and Resid Start carry the positions."""
    from headgraph.circuits.names import INTERNAL, QKV, parse_edge

    cases = {
        "blocks.0.hook_mlp_out[:]->blocks.1.hook_resid_mid[:]": ("MLP0", "MLP1", "MLP", False),
        "blocks.1.hook_k_input[:, :, 2]->blocks.1.attn.hook_k[:, :, 2]":
            (None, None, INTERNAL, False),
        "blocks.1.attn.hook_v[:, :, 0]->blocks.1.attn.hook_result[:, :, 0]":
            (None, None, INTERNAL, False),
        "blocks.0.hook_mlp_in[:]->blocks.0.hook_mlp_out[:]": (None, None, INTERNAL, False),
        "blocks.0.hook_resid_pre[:]->blocks.1.hook_q_input[:, :, 1]": ("EMBED", "L1H1", "Q",
                                                                      True),
        "hook_embed[:]->blocks.0.hook_v_input[:, :, 3]": ("EMBED", "L0H3", "V", False),
        "A0.2->A1.1": ("L0H2", "L1H1", QKV, False),
        "Resid Start->MLP 0": ("EMBED", "MLP0", "MLP", True),
    }
    for name, (source, target, kind, with_pos) in cases.items():
        _, s, d = parse_edge(name, resid_post_layer=1)
        assert d.kind == kind, name
        if kind != INTERNAL:
            assert (s.node, d.node, s.with_pos) == (source, target, with_pos), name
    assert parse_edge("blocks.1.hook_k_input[:, :, 2]->blocks.1.attn.hook_k[:, :, 3]") is None
