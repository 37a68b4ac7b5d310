"""Import head-level circuits found by ACDC, auto-circuit or EAP-IG as causal evidence on
headgraph's own edges.

Formats
-------
``eap-ig-json``  EAP-IG's ``Graph.to_json``: ``{"cfg": {...}, "nodes": {name: {"in_graph":
                 bool, ...} | bool}, "edges": {"a0.h1->a1.h2<k>": {"score": float,
                 "in_graph": bool}}}``. Every edge of the model is listed.
``edge-list``    text, one edge a line: ``SOURCE->TARGET[<q|k|v>] [SCORE]`` (score after a
                 space, tab or comma); ``#`` lines are comments. The listed edges are the
                 circuit.

Names (:data:`NAMINGS`; a file may use any one)
-----------------------------------------------
===========  =============================  ===========================================
headgraph    EAP-IG / ``a0.h1`` style        ACDC hooks                 auto-circuit
===========  =============================  ===========================================
EMBED        ``input``                       ``blocks.0.hook_resid_pre``  ``Resid Start``
                                             (or ``hook_embed``)
POS_EMBED    (none)                          ``hook_pos_embed``           (none)
L{l}H{h}     ``a{l}.h{h}``; into it          ``blocks.{l}.attn.hook_result[:, :, h]``;
             ``...<q|k|v>``                  into it ``blocks.{l}.hook_{q|k|v}_input[:, :, h]``
                                                                          ``A{l}.{h}``;
                                                                          ``A{l}.{h}.Q|K|V``
MLP{l}       ``m{l}``                        ``blocks.{l}.hook_mlp_out`` /  ``MLP {l}``
                                             ``hook_mlp_in``
UNEMBED      ``logits``                      ``blocks.{L-1}.hook_resid_post``  ``Resid End``
===========  =============================  ===========================================

The kind of an edge is what its target reads: ``Q``/``K``/``V`` into a head, ``MLP`` into
an MLP, ``UNEMBED`` into the logits. Each edge becomes ``edge_scores`` rows of the model:
metric ``<tool>:in_graph`` (1 or 0) and, when the file has scores, ``<tool>:score``, all
with probe ``task:<task>``; the ``circuits`` table keeps the rest of the file (EAP-IG's
``cfg`` and ``nodes``, comment lines) so the circuit exports back unchanged. Scores are
stored as 4-byte floats (``edge_scores.value`` is REAL): EAP-IG's float32 scores round-trip
exactly. A circuit that names a node the model does not have (a head beyond its layers
or heads, an MLP it lacks) is refused whole with ``BAD_CIRCUIT``, and nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headgraph.errors import BadInputError

NAMINGS = ("eap", "acdc", "auto-circuit")
DEFAULT_TOOL = {"eap": "eap-ig", "acdc": "acdc", "auto-circuit": "auto-circuit"}
_EAP = re.compile(r"^(?:(?P<input>input)|(?P<logits>logits)|a(?P<al>\d+)\.h(?P<ah>\d+)|"
                  r"m(?P<ml>\d+))$")
_IDX = r"(?:\[\s*(?:[:]|COL|None)\s*,\s*(?:[:]|COL|None)\s*,\s*(?P<h>\d+)\s*\])"
_WHOLE = r"(?:\[\s*(?:[:]|COL|None)?\s*\])?"
_ACDC = re.compile(
    r"^(?:(?P<embed>(?:blocks\.0\.hook_resid_pre|hook_embed))" + _WHOLE
    + r"|(?P<pos>hook_pos_embed)" + _WHOLE
    + r"|blocks\.(?P<rl>\d+)\.hook_resid_post" + _WHOLE
    + r"|blocks\.(?P<al>\d+)\.attn\.hook_result" + _IDX
    + r"|blocks\.(?P<ql>\d+)\.(?:hook_(?P<qkv>[qkv])_input|attn\.hook_(?P<qkv2>[qkv]))"
    + _IDX.replace("?P<h>", "?P<qh>")
    + r"|blocks\.(?P<ml>\d+)\.hook_mlp_(?P<mio>in|out)" + _WHOLE + r")$")
_AUTO = re.compile(r"^(?:(?P<start>Resid Start)|(?P<end>Resid End)|A(?P<al>\d+)\.(?P<ah>\d+)"
                   r"(?:\.(?P<qkv>[QKV]))?|MLP (?P<ml>\d+))$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|NaN|Infinity)"
_LINE = re.compile(r"^(?P<edge>.*?)(?:[\s,]+(?P<score>" + _NUMBER + r"))?\s*$")


class CircuitError(BadInputError):
    """A circuit that does not fit the model it is imported for (nothing is written)."""

    code = "BAD_CIRCUIT"


@dataclass(frozen=True)
class End:
    """One end of an edge in headgraph's names; ``kind`` is set for targets (what reads)."""

    node: str
    kind: str | None = None


@dataclass(frozen=True)
class CircuitEdge:
    """One edge of a circuit: headgraph ``source -> target`` of ``kind``, its ``score``
    (None when the file has none) and whether it is in the circuit."""

    source: str
    target: str
    kind: str
    score: float | None
    in_graph: bool


def _eap_end(name: str, qkv: str | None, as_target: bool) -> End | None:
    m = _EAP.match(name)
    if m is None:
        return None
    if m["input"]:
        return None if as_target or qkv else End("EMBED")
    if m["logits"]:
        return End("UNEMBED", "UNEMBED") if as_target and not qkv else None
    if m["ml"] is not None:
        return None if qkv else End(f"MLP{int(m['ml'])}", "MLP" if as_target else None)
    node = f"L{int(m['al'])}H{int(m['ah'])}"
    if as_target:
        return End(node, qkv.upper()) if qkv else None
    return None if qkv else End(node)


def _acdc_end(name: str, as_target: bool) -> End | None:
    m = _ACDC.match(name.strip())
    if m is None:
        return None
    if m["embed"] or m["pos"]:
        return None if as_target else End("EMBED" if m["embed"] else "POS_EMBED")
    if m["rl"] is not None:
        return End("UNEMBED", "UNEMBED") if as_target else None
    if m["al"] is not None:
        return None if as_target else End(f"L{int(m['al'])}H{int(m['h'])}")
    if m["ql"] is not None:
        qkv = (m["qkv"] or m["qkv2"]).upper()
        return End(f"L{int(m['ql'])}H{int(m['qh'])}", qkv) if as_target else None
    if (m["mio"] == "in") != as_target:
        return None
    return End(f"MLP{int(m['ml'])}", "MLP" if as_target else None)


def _auto_end(name: str, as_target: bool) -> End | None:
    m = _AUTO.match(name.strip())
    if m is None:
        return None
    if m["start"]:
        return None if as_target else End("EMBED")
    if m["end"]:
        return End("UNEMBED", "UNEMBED") if as_target else None
    if m["ml"] is not None:
        return End(f"MLP{int(m['ml'])}", "MLP" if as_target else None)
    node = f"L{int(m['al'])}H{int(m['ah'])}"
    if as_target:
        return End(node, m["qkv"]) if m["qkv"] else None
    return None if m["qkv"] else End(node)


def parse_edge(name: str, resid_post_layer: int | None = None) -> tuple[str, End, End] | None:
    """``(naming, source, target)`` of an edge name in any of :data:`NAMINGS`; None if it
    is none of them. ``resid_post_layer`` (the model's last layer) checks ACDC's
    ``blocks.{l}.hook_resid_post``."""
    src, arrow, rest = name.partition("->")
    if not arrow:
        return None
    m = re.match(r"^(?P<dst>[^<>]+)<(?P<qkv>[qkv])>$", rest)
    dst, qkv = (m["dst"], m["qkv"]) if m else (rest, None)
    s, d = _eap_end(src, None, False), _eap_end(dst, qkv, True)
    if s and d:
        return "eap", s, d
    s, d = _acdc_end(src, False), _acdc_end(rest, True)
    if s and d:
        post = re.search(r"blocks\.(\d+)\.hook_resid_post", rest)
        if post and resid_post_layer is not None and int(post[1]) != resid_post_layer:
            return None
        return "acdc", s, d
    s, d = _auto_end(src, False), _auto_end(rest, True)
    if s and d:
        return "auto-circuit", s, d
    return None


def edge_name(edge: CircuitEdge, naming: str, n_layers: int) -> str:
    """``edge`` written back in ``naming`` (inverse of :func:`parse_edge`)."""
    return f"{_name(edge.source, None, naming, n_layers)}->" \
           f"{_name(edge.target, edge.kind, naming, n_layers)}"


def _name(node: str, kind: str | None, naming: str, n_layers: int) -> str:
    head = re.match(r"^L(\d+)H(\d+)$", node)
    mlp = re.match(r"^MLP(\d+)$", node)
    if naming == "eap":
        if head:
            base = f"a{head[1]}.h{head[2]}"
            return f"{base}<{kind.lower()}>" if kind in ("Q", "K", "V") else base
        if mlp:
            return f"m{mlp[1]}"
        return {"EMBED": "input", "UNEMBED": "logits"}[node]
    if naming == "auto-circuit":
        if head:
            return f"A{head[1]}.{head[2]}" + (f".{kind}" if kind in ("Q", "K", "V") else "")
        if mlp:
            return f"MLP {mlp[1]}"
        return {"EMBED": "Resid Start", "UNEMBED": "Resid End"}[node]
    if head:
        if kind in ("Q", "K", "V"):
            return f"blocks.{head[1]}.hook_{kind.lower()}_input[:, :, {head[2]}]"
        return f"blocks.{head[1]}.attn.hook_result[:, :, {head[2]}]"
    if mlp:
        return f"blocks.{mlp[1]}.hook_mlp_{'in' if kind == 'MLP' else 'out'}"
    return {"EMBED": "blocks.0.hook_resid_pre", "POS_EMBED": "hook_pos_embed",
            "UNEMBED": f"blocks.{n_layers - 1}.hook_resid_post"}[node]


@dataclass(frozen=True)
class ParsedCircuit:
    """What a circuit file holds: its ``format``, ``naming``, edges and the rest
    (``header``: EAP-IG's cfg and nodes, or comment lines and whether scores were given)."""

    format: str
    naming: str
    edges: tuple[CircuitEdge, ...]
    header: dict


def _edge(name: str, score: float | None, in_graph: bool, n_layers: int | None,
          where: str) -> tuple[str, CircuitEdge]:
    parsed = parse_edge(name, None if n_layers is None else n_layers - 1)
    if parsed is None:
        raise CircuitError(f"{where}: {name[:120]!r} is not an edge name headgraph reads "
                           "(a0.h1->a1.h2<k>, ACDC hook names or auto-circuit names).")
    naming, s, d = parsed
    assert d.kind is not None
    return naming, CircuitEdge(s.node, d.node, d.kind, score, in_graph)


def parse_eap_json(doc: dict, n_layers: int | None = None) -> ParsedCircuit:
    """An EAP-IG ``Graph.to_json`` document."""
    if not isinstance(doc.get("edges"), dict) or not isinstance(doc.get("nodes"), dict):
        raise CircuitError("an EAP-IG circuit is {\"cfg\", \"nodes\": {...}, \"edges\": "
                           "{...}}; `nodes` and `edges` must be objects.")
    edges, namings = [], set()
    for name, info in doc["edges"].items():
        if not isinstance(info, dict) or not isinstance(info.get("in_graph"), bool):
            raise CircuitError(f"edge {name!r}: expected {{\"score\": number, \"in_graph\": "
                               f"bool}}, got {str(info)[:80]}.")
        score = info.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise CircuitError(f"edge {name!r}: score {score!r} is not a number.")
        naming, edge = _edge(name, None if score is None else float(score), info["in_graph"],
                             n_layers, "edges")
        namings.add(naming)
        edges.append(edge)
    header = {k: v for k, v in doc.items() if k != "edges"}
    return ParsedCircuit("eap-ig-json", _one_naming(namings), tuple(edges), header)


def parse_edge_list(text: str, n_layers: int | None = None) -> ParsedCircuit:
    """An edge-list text (see the module doc)."""
    edges, namings, comments = [], set(), []
    has_scores: set[bool] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            comments.append(line)
            continue
        m = _LINE.match(line)
        assert m is not None  # the pattern matches any line
        name, score = m["edge"].strip(), m["score"]
        if score is not None and parse_edge(name, None) is None:
            name, score = line.strip(), None  # "A0.1->MLP 1": the number was a name
        naming, edge = _edge(name, None if score is None else float(score), True, n_layers,
                             f"line {number}")
        namings.add(naming)
        has_scores.add(score is not None)
        edges.append(edge)
    if len(has_scores) > 1:
        raise CircuitError("some edges have a score and some do not; give all or none.")
    return ParsedCircuit("edge-list", _one_naming(namings), tuple(edges),
                         {"comments": comments, "scores": has_scores == {True}})


def _one_naming(namings: set[str]) -> str:
    if len(namings) > 1:
        raise CircuitError(f"the file mixes edge namings ({', '.join(sorted(namings))}); "
                           "use one.")
    return next(iter(namings), "eap")
