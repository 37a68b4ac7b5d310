"""Edge names of the circuit discovery tools, parsed into headgraph's nodes and kinds.

===========  ===========================  ====================================  ==================
headgraph    EAP-IG (``a0.h1`` style)      ACDC hooks (``str`` of its nodes)     auto-circuit
===========  ===========================  ====================================  ==================
EMBED        ``input`` (``hook_embed``)    ``hook_embed``;                       ``Resid Start``
                                           ``blocks.0.hook_resid_pre`` (token    (token + position)
                                           + position)
POS_EMBED    (none)                        ``hook_pos_embed``; with the above
L{l}H{h}     ``a{l}.h{h}``; into it        ``blocks.{l}.attn.hook_result[:, :,   ``A{l}.{h}``; into
             ``...<q|k|v>``                h]``; into it ``blocks.{l}.hook_      it ``A{l}.{h}.Q|K|V``
                                           {q|k|v}_input[:, :, h]`` (old runs:   or ``A{l}.{h}`` (all
                                           ``attn.hook_{q|k|v}``)                three: separate_qkv
                                                                                 =False)
MLP{l}       ``m{l}``                      ``blocks.{l}.hook_mlp_out``; into it  ``MLP {l}``
                                           ``hook_mlp_in`` (old runs:
                                           ``hook_resid_mid``)
UNEMBED      ``logits``                    ``blocks.{L-1}.hook_resid_post``      ``Resid End``
===========  ===========================  ====================================  ==================

The kind of an edge is what its target reads: ``Q``/``K``/``V`` into a head, ``MLP`` into
an MLP, ``UNEMBED`` into the logits. Three kinds of name mean more than one headgraph edge
or none, and :mod:`headgraph.circuits.formats` expands them, remembering how to write them
back:

* ``blocks.0.hook_resid_pre`` and auto-circuit's ``Resid Start`` are the token and the
  positional embedding summed (``End.with_pos``): an edge from them is an edge from
  ``EMBED`` and, in a model with learned positions, one from ``POS_EMBED``;
* auto-circuit's ``A{l}.{h}`` as a target (``separate_qkv=False``, which its Sports Players
  task requires) is the head read through all of Q, K and V (kind :data:`QKV`): three edges;
* ACDC's head- and MLP-internal edges (kind :data:`INTERNAL`): ``hook_q_input[:, :, h] ->
  attn.hook_q[:, :, h]`` (its DIRECT_COMPUTATION edges, tested and kept or removed like
  the others, so every ACDC edge list holds them) and ``attn.hook_q -> attn.hook_result``,
  ``hook_mlp_in -> hook_mlp_out`` (PLACEHOLDER, in ``save_subgraph`` files). They join no
  two components, so no composition edge is theirs: they are kept with the circuit
  (exported back) and put on no edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMINGS = ("eap", "acdc", "auto-circuit")
QKV = "QKV"  # an auto-circuit head target read through all of Q, K and V
INTERNAL = "INTERNAL"  # an ACDC edge inside one head or MLP

_EAP = re.compile(r"^(?:(?P<input>input)|(?P<logits>logits)|a(?P<al>\d+)\.h(?P<ah>\d+)|"
                  r"m(?P<ml>\d+))$")
_IDX = r"(?:\[\s*(?:[:]|COL|None)\s*,\s*(?:[:]|COL|None)\s*,\s*(?P<h>\d+)\s*\])"
_WHOLE = r"(?P<whole>\[\s*(?:[:]|COL|None)?\s*\])?"
_ACDC = re.compile(
    r"^(?:(?P<embed>blocks\.0\.hook_resid_pre|hook_embed)"
    r"|(?P<pos>hook_pos_embed)"
    r"|blocks\.(?P<rl>\d+)\.hook_resid_post"
    r"|blocks\.(?P<al>\d+)\.attn\.hook_result(?P<aidx>" + _IDX + ")?"
    r"|blocks\.(?P<il>\d+)\.hook_(?P<iqkv>[qkv])_input" + _IDX.replace("?P<h>", "?P<ih>")
    + r"|blocks\.(?P<ql>\d+)\.attn\.hook_(?P<qqkv>[qkv])" + _IDX.replace("?P<h>", "?P<qh>")
    + r"|blocks\.(?P<ml>\d+)\.(?P<mio>hook_mlp_in|hook_mlp_out|hook_resid_mid))"
    + _WHOLE + "$")
_AUTO = re.compile(r"^(?:(?P<start>Resid Start)|(?P<end>Resid End)|A(?P<al>\d+)\.(?P<ah>\d+)"
                   r"(?:\.(?P<qkv>[QKV]))?|MLP (?P<ml>\d+))$")


@dataclass(frozen=True)
class End:
    """One end of an edge in headgraph's names; ``kind`` is set for targets (what reads);
    ``with_pos`` for a source that is the token and positional embeddings summed."""

    node: str
    kind: str | None = None
    with_pos: bool = False


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


def _acdc(name: str) -> re.Match[str] | None:
    return _ACDC.match(name.strip())


def _acdc_internal(src: re.Match[str], dst: re.Match[str]) -> bool:
    """ACDC's edges inside one head or MLP (module doc)."""
    if src["il"] is not None and dst["ql"] is not None:  # hook_q_input -> attn.hook_q
        return (src["il"], src["iqkv"], src["ih"]) == (dst["ql"], dst["qqkv"], dst["qh"])
    if src["ql"] is not None and dst["al"] is not None and dst["aidx"]:  # hook_q -> result
        return (src["ql"], src["qh"]) == (dst["al"], dst["h"])
    if src["ml"] is not None and dst["ml"] is not None:  # hook_mlp_in -> hook_mlp_out
        return src["ml"] == dst["ml"] and src["mio"] != "hook_mlp_out" \
            and dst["mio"] == "hook_mlp_out"
    return False


def _acdc_end(m: re.Match[str], as_target: bool) -> End | None:
    if m["embed"] or m["pos"]:
        if as_target:
            return None
        return End("POS_EMBED") if m["pos"] else End("EMBED", with_pos=m["embed"] != "hook_embed")
    if m["rl"] is not None:
        return End("UNEMBED", "UNEMBED") if as_target else None
    if m["al"] is not None:
        return None if as_target or not m["aidx"] else End(f"L{int(m['al'])}H{int(m['h'])}")
    if m["il"] is not None or m["ql"] is not None:
        layer, qkv, head = ((m["il"], m["iqkv"], m["ih"]) if m["il"] is not None
                            else (m["ql"], m["qqkv"], m["qh"]))
        return End(f"L{int(layer)}H{int(head)}", qkv.upper()) if as_target else None
    reads = m["mio"] != "hook_mlp_out"
    if reads != as_target:
        return None
    return End(f"MLP{int(m['ml'])}", "MLP" if as_target else None)


def _auto_end(name: str, as_target: bool) -> End | None:
    m = _AUTO.match(name.strip())
    if m is None:
        return None
    if m["start"]:
        return None if as_target else End("EMBED", with_pos=True)
    if m["end"]:
        return End("UNEMBED", "UNEMBED") if as_target else None
    if m["ml"] is not None:
        return End(f"MLP{int(m['ml'])}", "MLP" if as_target else None)
    node = f"L{int(m['al'])}H{int(m['ah'])}"
    if as_target:
        return End(node, m["qkv"] or QKV)
    return None if m["qkv"] else End(node)


def parse_edge(name: str, resid_post_layer: int | None = None) -> tuple[str, End, End] | None:
    """``(naming, source, target)`` of an edge name in any of :data:`NAMINGS`; None if it
    is none of them. ``resid_post_layer`` (the model's last layer) checks ACDC's
    ``blocks.{l}.hook_resid_post``. ACDC's internal edges come back with target kind
    :data:`INTERNAL`."""
    src, arrow, rest = name.partition("->")
    if not arrow:
        return None
    m = re.match(r"^(?P<dst>[^<>]+)<(?P<qkv>[qkv])>$", rest)
    dst, qkv = (m["dst"], m["qkv"]) if m else (rest, None)
    s, d = _eap_end(src, None, False), _eap_end(dst, qkv, True)
    if s and d:
        return "eap", s, d
    ms, md = _acdc(src), _acdc(rest)
    if ms is not None and md is not None:
        if _acdc_internal(ms, md):
            return "acdc", End(src.strip()), End(rest.strip(), INTERNAL)
        s, d = _acdc_end(ms, False), _acdc_end(md, True)
        if s and d:
            post = md["rl"]
            if post is not None and resid_post_layer is not None and int(post) != resid_post_layer:
                return None
            return "acdc", s, d
        return None
    s, d = _auto_end(src, False), _auto_end(rest, True)
    if s and d:
        return "auto-circuit", s, d
    return None


def acdc_whole_index(name: str) -> bool:
    """Whether an ACDC name writes a whole node's index (``blocks.0.hook_mlp_out[:]``,
    as ACDC's ``str`` of a node does)."""
    m = _acdc(name)
    return bool(m is not None and m["whole"])


def acdc_index(index: tuple) -> str:
    """ACDC's ``TorchIndex`` as its ``str`` writes it: ``(None,)`` -> ``[:]``,
    ``(None, None, 3)`` -> ``[:, :, 3]``."""
    return "[" + ", ".join(":" if x is None else str(x) for x in index) + "]"


def node_name(node: str, kind: str | None, naming: str, n_layers: int,
              style: dict | None = None) -> str:
    """A headgraph node (as a source, or as a target of ``kind``) in ``naming``; ``style``
    says how an ACDC file wrote what has two spellings (``whole``: ``[:]`` after whole
    nodes; ``mlp_in``: ``hook_resid_mid``; ``embed``: ``hook_embed`` for EMBED)."""
    style = style or {}
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
            suffix = f".{kind}" if kind in ("Q", "K", "V") else ""
            return f"A{head[1]}.{head[2]}{suffix}"
        if mlp:
            return f"MLP {mlp[1]}"
        return {"EMBED": "Resid Start", "UNEMBED": "Resid End"}[node]
    whole = "[:]" if style.get("whole") else ""
    if head:
        if kind in ("Q", "K", "V"):
            return f"blocks.{head[1]}.hook_{kind.lower()}_input[:, :, {head[2]}]"
        return f"blocks.{head[1]}.attn.hook_result[:, :, {head[2]}]"
    if mlp:
        reads = style.get("mlp_in", "hook_mlp_in") if kind == "MLP" else "hook_mlp_out"
        return f"blocks.{mlp[1]}.{reads}{whole}"
    return {"EMBED": style.get("embed", "blocks.0.hook_resid_pre"),
            "POS_EMBED": "hook_pos_embed",
            "UNEMBED": f"blocks.{n_layers - 1}.hook_resid_post"}[node] + whole
