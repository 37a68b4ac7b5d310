"""Synthetic attribution graphs in circuit-tracer's JSON shape, for tests and benchmarks.

The layout follows circuit-tracer's ``create_graph_files``: token nodes (layer ``"E"``,
``feature_type`` ``embedding``), transcoder features (``cross layer transcoder``), one
reconstruction error per layer and position (``mlp reconstruction error``) and logit nodes
(layer ``n_layers + 1``, ``logit``, with ``token_prob``). Every link goes from a lower
layer to a higher one; weights are float32 values with heavy-tailed per-source scales,
so influence is concentrated in few nodes as in real graphs. The file is written in
batches: a 16M-link graph (~1.7 GB) never sits in memory.

Examples
--------
>>> write_graph("/tmp/g.json", SynthSpec(n_links=10_000))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SynthSpec:
    """Shape of a synthetic graph; ``n_links`` links drawn with replacement."""

    slug: str = "synthetic"
    scan: str = "synthetic-model"
    n_layers: int = 6
    n_pos: int = 8
    n_features: int = 200
    n_logits: int = 4
    n_links: int = 5_000
    seed: int = 0


def _nodes(spec: SynthSpec, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """Node objects and each node's layer key (tokens -1, logits n_layers)."""
    nodes: list[dict] = []
    keys: list[int] = []
    for pos in range(spec.n_pos):
        tok = int(rng.integers(0, 50_000))
        nodes.append({"node_id": f"E_{tok}_{pos}", "feature": tok, "layer": "E",
                      "ctx_idx": pos, "feature_type": "embedding",
                      "jsNodeId": f"E_{tok}-{pos}", "clerp": f' Emb: "tok{tok}"'})
        keys.append(-1)
    for i in range(spec.n_features):
        layer, pos = int(rng.integers(0, spec.n_layers)), int(rng.integers(0, spec.n_pos))
        feat = int(rng.integers(0, 1 << 17)) * spec.n_features + i  # unique
        nodes.append({"node_id": f"{layer}_{feat}_{pos}", "feature": feat, "layer": str(layer),
                      "ctx_idx": pos, "feature_type": "cross layer transcoder",
                      "jsNodeId": f"{layer}_{feat}-{pos}", "clerp": "",
                      "influence": float(np.float32(rng.random())),
                      "activation": float(np.float32(rng.gamma(2.0, 2.0)))})
        keys.append(layer)
    for layer in range(spec.n_layers):
        for pos in range(spec.n_pos):
            nodes.append({"node_id": f"err_{layer}_{pos}", "feature": None, "layer": str(layer),
                          "ctx_idx": pos, "feature_type": "mlp reconstruction error",
                          "jsNodeId": f"{layer}_{pos}-err", "clerp": f"Err: mlp {layer}"})
            keys.append(layer)
    probs = rng.dirichlet(np.ones(spec.n_logits)) * 0.9
    for j, p in enumerate(sorted(probs, reverse=True)):
        vocab = int(rng.integers(0, 50_000))
        nodes.append({"node_id": f"{spec.n_layers + 1}_{vocab}_{spec.n_pos - 1}",
                      "feature": vocab, "layer": str(spec.n_layers + 1),
                      "ctx_idx": spec.n_pos - 1, "feature_type": "logit",
                      "jsNodeId": f"L_{vocab}-{spec.n_pos - 1}", "clerp": f'Output "{j}"',
                      "token_prob": float(np.float32(p)), "is_target_logit": j == 0})
        keys.append(spec.n_layers)
    return nodes, np.array(keys)


def _links(spec: SynthSpec, keys: np.ndarray, rng: np.random.Generator, size: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``size`` links from a lower layer key to a higher one."""
    order = np.argsort(keys, kind="stable")
    below = np.searchsorted(keys[order], keys, side="left")  # nodes with a lower key
    targets = np.flatnonzero(below > 0)
    tgt = targets[rng.integers(0, targets.size, size)]
    src = order[(rng.random(size) * below[tgt]).astype(np.int64)]
    scale = np.exp(rng.normal(0.0, 1.5, keys.size))
    weight = (rng.standard_normal(size) * scale[src]).astype(np.float32)
    return src, tgt, weight


def graph_document(spec: SynthSpec) -> dict:
    """The whole graph as a Python object (small graphs: tests)."""
    rng = np.random.default_rng(spec.seed)
    nodes, keys = _nodes(spec, rng)
    src, tgt, weight = _links(spec, keys, rng, spec.n_links)
    ids = [n["node_id"] for n in nodes]
    return {**_header(spec, nodes), "nodes": nodes,
            "links": [{"source": ids[s], "target": ids[t], "weight": float(w)}
                      for s, t, w in zip(src.tolist(), tgt.tolist(), weight.tolist(),
                                         strict=True)]}


def _header(spec: SynthSpec, nodes: list[dict]) -> dict:
    tokens = [n["clerp"] for n in nodes if n["feature_type"] == "embedding"]
    return {
        "metadata": {"slug": spec.slug, "scan": spec.scan, "prompt_tokens": tokens,
                     "prompt": "".join(tokens), "node_threshold": 0.8,
                     "schema_version": 1, "info": {"generator": {"name": "headgraph-synth"}}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                    "sg_pos": ""},
    }


def write_graph(path: str | os.PathLike[str], spec: SynthSpec, batch: int = 500_000) -> int:
    """Write the graph of ``spec`` to ``path`` in batches; returns the bytes written."""
    rng = np.random.default_rng(spec.seed)
    nodes, keys = _nodes(spec, rng)
    ids = [n["node_id"] for n in nodes]
    header = _header(spec, nodes)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in header.items()))
        f.write(', "nodes": [' + ", ".join(json.dumps(n) for n in nodes) + '], "links": [')
        for start in range(0, spec.n_links, batch):
            size = min(batch, spec.n_links - start)
            src, tgt, weight = _links(spec, keys, rng, size)
            text = ", ".join(f'{{"source": "{ids[s]}", "target": "{ids[t]}", "weight": {w!r}}}'
                             for s, t, w in zip(src.tolist(), tgt.tolist(), weight.tolist(),
                                                strict=True))
            f.write((", " if start else "") + text)
        f.write("]}")
        return f.tell()
