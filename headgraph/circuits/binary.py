"""Circuit files that tools write with ``torch.save``, read with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which builds tensors and
plain containers (dict, list, tuple, OrderedDict, numbers, strings, None) and refuses
every other object, so a crafted file cannot run code. torch is imported here only.

=============================  ===========================================================
what the file holds             read as
=============================  ===========================================================
``{(receiver, (None, None, h)   ACDC's ``save_subgraph`` (``acdc/TLACDCExperiment.py``):
| (None,), sender, ...):        every edge of the finished run, ``True`` where present;
bool}``                         names written as ACDC prints them (``[:, :, h]``, ``[:]``)
``{"cfg", "src_nodes",          EAP-IG's ``Graph.to_pt`` (``src/eap/graph.py``): a matrix
"dst_nodes", "edges_scores",    of scores and one of membership, forward node by backward
"edges_in_graph", ...}``        node; the real edges are rebuilt from ``cfg`` as
                                ``Graph.from_model`` builds them (a node feeds every later
                                one; a layer's MLP reads its attention unless
                                ``parallel_attn_mlp``)
``{task: {algorithm:            auto-circuit's ``save_cache`` of prune scores: scores of
{module name: tensor}}}``       every edge with no circuit chosen; refused with the lines
                                that export a circuit from it
=============================  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from headgraph.circuits.formats import (
    CircuitError,
    ParsedCircuit,
    parse_eap_json,
    parse_edge_list,
)
from headgraph.circuits.names import acdc_index

AUTO_CIRCUIT_RECIPE = (
    "auto-circuit's prune-score cache scores every edge and chooses none: export a circuit "
    "from it in your auto-circuit session, as its users do (json.dump([[e.seq_idx, e.name] "
    "for e in edges_from_mask(model.srcs, model.dests, {k: v.abs() >= threshold for k, v "
    "in prune_scores.items()}, model.is_factorized)], f, indent=4)), and import that file.")


def load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`CircuitError` for a file
    that holds anything but tensors and plain containers."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CircuitError(f"{path}: a PyTorch file headgraph will not load: it holds more than "
                           "tensors and plain containers, or is damaged (torch.load with "
                           f"weights_only=True: {first[:160]}).") from None


def read_torch_circuit(path: Path, n_layers: int | None) -> ParsedCircuit:
    """The circuit in a ``torch.save`` file (module table)."""
    data = load(path)
    if isinstance(data, Mapping) and data and all(_acdc_key(k) for k in data):
        return _acdc_subgraph(data, n_layers)
    if isinstance(data, Mapping) and {"cfg", "src_nodes", "dst_nodes", "edges_scores",
                                      "edges_in_graph"} <= set(data):
        return _eap_pt(data, n_layers)
    if isinstance(data, Mapping) and data and all(
            isinstance(v, Mapping) and all(isinstance(w, Mapping) for w in v.values())
            for v in data.values()):
        raise CircuitError(f"{path}: {AUTO_CIRCUIT_RECIPE}")
    raise CircuitError(f"{path}: a PyTorch file, but not one of the circuits headgraph reads "
                       "(ACDC save_subgraph .pth, EAP-IG to_pt): it holds "
                       f"{type(data).__name__}.")


def _acdc_key(key: object) -> bool:
    return (isinstance(key, tuple) and len(key) == 4 and isinstance(key[0], str)
            and isinstance(key[2], str) and isinstance(key[1], tuple)
            and isinstance(key[3], tuple))


def _acdc_subgraph(data: Mapping, n_layers: int | None) -> ParsedCircuit:
    """ACDC's ``save_subgraph``: the present edges as an edge list in ACDC's names."""
    lines = []
    absent = []
    for (receiver, r_index, sender, s_index), present in data.items():
        if not isinstance(present, bool):
            raise CircuitError(f"an ACDC subgraph maps edges to True/False, not {present!r}.")
        name = f"{sender}{acdc_index(s_index)}->{receiver}{acdc_index(r_index)}"
        (lines if present else absent).append(name)
    parsed = parse_edge_list("\n".join(lines), n_layers)
    return replace(parsed, format="acdc-pth", header=dict(parsed.header, absent=absent))


_EAP_NODE = re.compile(r"^(?:input|logits|a(?P<al>\d+)\.h\d+|m(?P<ml>\d+))(?:<[qkv]>)?$")


def _stage(name: str, parallel: bool, reading: bool) -> tuple[float, int]:
    """Where a node writes (``reading`` False) or reads in EAP-IG's residual stream."""
    m = _EAP_NODE.match(name)
    if m is None:
        raise CircuitError(f"EAP-IG node {name!r} is not one headgraph reads.")
    if name.startswith("input"):
        return (-1, 0)
    if name.startswith("logits"):
        return (float("inf"), 0)
    if m["al"] is not None:
        return (int(m["al"]), 0)
    return (int(m["ml"]), 0 if parallel and reading else 1)


def _eap_pt(data: Mapping, n_layers: int | None) -> ParsedCircuit:
    """EAP-IG's ``to_pt``: one edge per forward node that writes before the backward node
    reads (module table), with its score and membership."""
    cfg = data["cfg"]
    parallel = bool(cfg.get("parallel_attn_mlp")) if isinstance(cfg, Mapping) else False
    src, dst = list(data["src_nodes"]), list(data["dst_nodes"])
    scores, member = data["edges_scores"], data["edges_in_graph"]
    if tuple(scores.shape) != (len(src), len(dst)) or tuple(member.shape) != tuple(scores.shape):
        raise CircuitError("an EAP-IG to_pt file whose score matrix is not forward nodes x "
                           "backward nodes.")
    edges: dict[str, dict] = {}
    for j, d in enumerate(dst):
        reads = _stage(d, parallel, True)
        for i, s in enumerate(src):
            if _stage(s, parallel, False) < reads:
                edges[f"{s}->{d}"] = {"score": float(scores[i, j]),
                                      "in_graph": bool(member[i, j])}
    nodes = {}
    in_graph = data.get("nodes_in_graph")
    for i, name in enumerate(src):
        nodes[name] = {"in_graph": bool(in_graph[i]) if in_graph is not None else True}
    nodes["logits"] = {"in_graph": True}
    parsed = parse_eap_json({"cfg": dict(cfg), "nodes": nodes, "edges": edges}, n_layers)
    return replace(parsed, format="eap-ig-pt")
