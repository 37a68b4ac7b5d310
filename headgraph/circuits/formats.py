"""The files circuit discovery tools write, parsed into headgraph's edges.

Formats
-------
==================  ===============================================================
``eap-ig-json``     EAP-IG's ``Graph.to_json`` (``src/eap/graph.py``): ``{"cfg", "nodes":
                    {name: {"in_graph": bool, ...}}, "edges": {"a0.h1->a1.h2<k>":
                    {"score": float, "in_graph": bool}}}``; the 2024 format (until
                    2025-02-23) has ``nodes: {name: bool}`` and may give ``score: null``.
                    Every edge of the model is listed; ``in_graph`` marks the circuit.
                    Files of 2025-02-23 .. 2025-04-07 have no ``edges`` (that version's
                    ``to_json`` forgot them) and are refused with that reason.
``eap-ig-pt``       EAP-IG's ``Graph.to_pt`` (``torch.save``; :mod:`.binary`)
``acdc-pth``        ACDC's ``save_subgraph`` (``torch.save`` of ``{(receiver, index, sender,
                    index): bool}``; :mod:`.binary`)
``auto-circuit-json``  auto-circuit has no circuit file of its own; its users save
                    ``[(edge.seq_idx, edge.name) for edge in edges]`` with ``json.dump(...,
                    indent=4)`` (reml-lab/auto-circuit-tests, ``find_and_test_circuit.py``):
                    a list of ``[seq_idx | null, "Src->Dest"]``, a third item a score if
                    given. ``seq_idx`` is the token position of a per-token circuit
                    (``patchable_model(..., seq_len=N)``): positions are kept.
``edge-list``       text, one edge a line: ``SOURCE->TARGET[<q|k|v>] [SCORE]`` (score after a
                    space, tab or comma; an edge may lack one, as ACDC's untested edges do);
                    ``#`` lines are comments. The listed edges are the circuit. ACDC's
                    ``save_edges`` pickle becomes one with ``headgraph convert-circuit``.
==================  ===============================================================

Names are parsed by :mod:`headgraph.circuits.names`; :meth:`ParsedCircuit.expanded` turns
the names that mean several edges into them (the embedding with positions, a head read
through Q, K and V) once the model is known. Scores must be finite (``BAD_CIRCUIT``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from headgraph.circuits.names import INTERNAL, QKV, acdc_whole_index, node_name, parse_edge
from headgraph.errors import BadInputError

DEFAULT_TOOL = {"eap": "eap-ig", "acdc": "acdc", "auto-circuit": "auto-circuit"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|NaN|Infinity)"
_LINE = re.compile(r"^(?P<edge>.*?)(?:[\s,]+(?P<score>" + _NUMBER + r"))?\s*$")


class CircuitError(BadInputError):
    """A circuit that does not fit the model it is imported for (nothing is written)."""

    code = "BAD_CIRCUIT"


@dataclass(frozen=True)
class CircuitEdge:
    """One edge of a circuit: headgraph ``source -> target`` of ``kind``, its ``score``
    (None when the file has none) and whether it is in the circuit. Before
    :meth:`ParsedCircuit.expanded`, ``kind`` may be :data:`~headgraph.circuits.names.QKV`
    and ``with_pos`` marks an ``EMBED`` source that is token and position summed."""

    source: str
    target: str
    kind: str
    score: float | None
    in_graph: bool
    with_pos: bool = False


@dataclass(frozen=True)
class ParsedCircuit:
    """What a circuit file holds: its ``format``, ``naming``, edges and the rest
    (``header``: EAP-IG's cfg and nodes; comment lines, ACDC's internal edges and how the
    names were spelt; an auto-circuit export's entries with their positions)."""

    format: str
    naming: str
    edges: tuple[CircuitEdge, ...]
    header: dict
    resid_post: frozenset[int] = frozenset()  # ACDC's blocks.{l}.hook_resid_post layers named

    def check_layers(self, n_layers: int) -> None:
        """ACDC names the output ``blocks.{L-1}.hook_resid_post``: another ``l`` means the
        circuit was found on a model of another depth (:class:`CircuitError`)."""
        wrong = sorted(self.resid_post - {n_layers - 1})
        if wrong:
            raise CircuitError(f"the circuit reads the output at blocks.{wrong[0]}.hook_resid_post,"
                               f" but the model's last layer is {n_layers - 1}: it was found on "
                               "another model.")

    def expanded(self, has_pos_embed: bool) -> ParsedCircuit:
        """Each edge as headgraph's edges: an embedding source with positions also from
        ``POS_EMBED`` (when the model has one), a head target of all of Q, K and V as
        three. ``header["style"]`` records what to fold back on export."""
        style = dict(self.header.get("style") or {})
        out: list[CircuitEdge] = []
        for e in self.edges:
            sources = ["EMBED", "POS_EMBED"] if e.with_pos and has_pos_embed else [e.source]
            kinds = ["Q", "K", "V"] if e.kind == QKV else [e.kind]
            style["resid_pre"] = style.get("resid_pre", False) or (e.with_pos and has_pos_embed)
            style["qkv"] = style.get("qkv", False) or e.kind == QKV
            out.extend(replace(e, source=s, kind=k, with_pos=False)
                       for s in sources for k in kinds)
        return replace(self, edges=tuple(out), header={**self.header, "style": style})


def edge_name(edge: CircuitEdge, naming: str, n_layers: int, style: dict | None = None) -> str:
    """``edge`` written back in ``naming`` (inverse of
    :func:`~headgraph.circuits.names.parse_edge`); ``style`` as
    :func:`~headgraph.circuits.names.node_name` takes it."""
    style = style or {}
    kind = None if style.get("qkv") and edge.kind in ("Q", "K", "V") else edge.kind
    return (f"{node_name(edge.source, None, naming, n_layers, style)}->"
            f"{node_name(edge.target, kind, naming, n_layers, style)}")


def _score(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CircuitError(f"{where}: score {value!r} is not a number.")
    value = float(value)
    if not math.isfinite(value):
        raise CircuitError(f"{where}: score {value!r} is not finite; headgraph stores finite "
                           "scores only (drop the edge's score or fix the tool's output).")
    return value


def _edge(name: str, score: float | None, in_graph: bool, n_layers: int | None,
          where: str) -> tuple[str, CircuitEdge]:
    parsed = parse_edge(name, None if n_layers is None else n_layers - 1)
    if parsed is None:
        raise CircuitError(f"{where}: {name[:120]!r} is not an edge name headgraph reads "
                           "(a0.h1->a1.h2<k>, ACDC hook names or auto-circuit names).")
    naming, s, d = parsed
    assert d.kind is not None
    return naming, CircuitEdge(s.node, d.node, d.kind, score, in_graph, s.with_pos)


_POST = re.compile(r"->\s*blocks\.(\d+)\.hook_resid_post")


def _post_layers(names: list[str]) -> frozenset[int]:
    return frozenset(int(m[1]) for m in map(_POST.search, names) if m)


def _one_naming(namings: set[str]) -> str:
    if len(namings) > 1:
        raise CircuitError(f"the file mixes edge namings ({', '.join(sorted(namings))}); "
                           "use one.")
    return next(iter(namings), "eap")


def parse_eap_json(doc: dict, n_layers: int | None = None) -> ParsedCircuit:
    """An EAP-IG ``Graph.to_json`` document (either format of the module table)."""
    if "edges" not in doc and isinstance(doc.get("nodes"), dict) and "cfg" in doc:
        raise CircuitError(
            "this EAP-IG file has no `edges`: EAP-IG's to_json of 2025-02-23 to 2025-04-07 "
            "(commit b1d37eb and before 4fad6c6) forgot to write them, so the file holds "
            "nodes only. Save the graph again with a current EAP-IG (to_json or to_pt).")
    if not isinstance(doc.get("edges"), dict) or not isinstance(doc.get("nodes"), dict):
        raise CircuitError("an EAP-IG circuit is {\"cfg\", \"nodes\": {...}, \"edges\": "
                           "{...}}; `nodes` and `edges` must be objects.")
    edges, namings = [], set()
    for name, info in doc["edges"].items():
        if not isinstance(info, dict) or not isinstance(info.get("in_graph"), bool):
            raise CircuitError(f"edge {name!r}: expected {{\"score\": number, \"in_graph\": "
                               f"bool}}, got {str(info)[:80]}.")
        naming, edge = _edge(name, _score(info.get("score"), f"edge {name!r}"),
                             info["in_graph"], n_layers, "edges")
        namings.add(naming)
        edges.append(edge)
    header = {k: v for k, v in doc.items() if k != "edges"}
    return ParsedCircuit("eap-ig-json", _one_naming(namings), tuple(edges), header,
                         _post_layers(list(doc["edges"])))


def parse_edge_list(text: str, n_layers: int | None = None) -> ParsedCircuit:
    """An edge-list text (see the module doc)."""
    edges, namings, comments, internal, names = [], set(), [], [], []
    scored = whole = False
    style: dict = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            comments.append(line)
            continue
        m = _LINE.match(line)
        assert m is not None  # the pattern matches any line
        name, raw = m["edge"].strip(), m["score"]
        if raw is not None and parse_edge(name, None) is None:
            name, raw = line.strip(), None  # "A0.1->MLP 1": the number was a name
        score = None if raw is None else _score(float(raw), f"line {number}")
        naming, edge = _edge(name, score, True, n_layers, f"line {number}")
        names.append(name)
        namings.add(naming)
        scored |= score is not None
        if naming == "acdc":
            whole |= acdc_whole_index(name.partition("->")[0])
            if "hook_resid_mid" in name:
                style["mlp_in"] = "hook_resid_mid"
            if name.startswith("hook_embed"):
                style["embed"] = "hook_embed"
        if edge.kind == INTERNAL:
            internal.append([name, score])
        else:
            edges.append(edge)
    if not edges and not internal:
        raise CircuitError("the file holds no edges (an edge list is one "
                           "SOURCE->TARGET [SCORE] a line).")
    if whole:
        style["whole"] = True
    header = {"comments": comments, "scores": scored}
    if internal:
        header["internal"] = internal
    if style:
        header["style"] = style
    return ParsedCircuit("edge-list", _one_naming(namings), tuple(edges), header,
                         _post_layers(names))


def parse_auto_circuit_json(entries: list, n_layers: int | None = None) -> ParsedCircuit:
    """An auto-circuit edge export: ``[[seq_idx | null, "Src->Dest"(, score)], ...]``
    (module doc). An edge is in the circuit at each position listed with it."""
    grouped: dict[str, list] = {}
    namings = set()
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) in (2, 3) and isinstance(entry[1], str)
                and (entry[0] is None or (isinstance(entry[0], int)
                                          and not isinstance(entry[0], bool)
                                          and entry[0] >= 0))):
            raise CircuitError(f"entry {i}: an auto-circuit export is a list of [seq_idx, "
                               f"\"Src->Dest\"] (seq_idx a position or null), not "
                               f"{str(entry)[:80]}.")
        if len(entry) == 3:
            _score(entry[2], f"entry {i}")
        grouped.setdefault(entry[1], []).append(entry[0])
    edges = []
    for name in grouped:
        naming, edge = _edge(name, None, True, n_layers, "entries")
        if edge.kind == INTERNAL:
            raise CircuitError(f"{name!r} is an ACDC-internal edge, not an auto-circuit one.")
        namings.add(naming)
        edges.append(edge)
    tokens = any(p is not None for ps in grouped.values() for p in ps)
    return ParsedCircuit("auto-circuit-json", _one_naming(namings), tuple(edges),
                         {"entries": entries, "token_circuit": tokens}, _post_layers(list(grouped)))
