"""Virtual attention heads, scored exactly (Elhage et al. 2021).

A chain of V-composition ``h1 -> h2 (-> h3)`` acts as one *virtual head* whose OV circuit is
the product ``W_OV^1 W_OV^2 (W_OV^3)``. Its strength is

    score = ‖W_OV^1 W_OV^2 …‖_F / Π_i ‖W_OV^i‖_F

(1 would mean the heads' OV circuits align perfectly), and its copying score comes from the
eigenvalues of the full circuit ``W_E W_OV^1 W_OV^2 … W_U``, whose non-zero eigenvalues are
those of the ``d_head x d_head`` core ``W_O^n (W_U W_E) W_V^1 (W_O^1 W_V^2) … (W_O^{n-1} W_V^n)``.

Candidates come from the stored V-composition edges (the product of their scores is a
cheap proxy); each candidate is then computed exactly from the weights. For chains of
three, each middle head contributes its ``fan`` strongest in- and out-edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.compose import EDGE_KINDS, ComposedGraph
from headgraph.ingest.kernel import copying_scores, frob, qr_r
from headgraph.ingest.reader import WeightReader


@dataclass(frozen=True)
class VirtualHead:
    heads: tuple[str, ...]
    score: float  # exact ‖Π W_OV‖ / Π ‖W_OV‖
    heuristic: float  # product of the chain's stored V-composition scores
    copying_positive_fraction: float
    copying_ratio: float


def candidate_chains(graph: ComposedGraph, top: int, fan: int = 16
                     ) -> dict[int, list[tuple[tuple[int, ...], float]]]:
    """The ``top`` chains of length 2 and 3 by product of V-composition scores."""
    e, n = graph.edges, graph.nodes
    sel = (e.kind == EDGE_KINDS.index("V")) & (n.heads[e.source] >= 0) & (n.heads[e.target] >= 0)
    src, dst, score = e.source[sel], e.target[sel], e.score[sel].astype(np.float64)
    pairs = np.argsort(-score, kind="stable")[:top]
    chains = {2: [((int(src[i]), int(dst[i])), float(score[i])) for i in pairs]}
    # length 3: the ``fan`` strongest in- and out-edges of every middle head
    def strongest(key: np.ndarray) -> dict[int, np.ndarray]:
        order = np.lexsort((-score, key))
        grouped = key[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        return {int(grouped[a]): order[a : a + min(n, fan)] for a, n in zip(starts, sizes,
                                                                            strict=True)}

    into, out_of = strongest(dst), strongest(src)
    cand_src, cand_mid, cand_dst, cand_val = [], [], [], []
    for m in into.keys() & out_of.keys():
        a, b = into[m], out_of[m]
        cand_src.append(np.repeat(src[a], len(b)))
        cand_dst.append(np.tile(dst[b], len(a)))
        cand_mid.append(np.full(len(a) * len(b), m))
        cand_val.append(np.outer(score[a], score[b]).ravel())
    triples = []
    if cand_val:
        vals = np.concatenate(cand_val)
        best = np.argsort(-vals, kind="stable")[:top]
        s_, m_, d_ = (np.concatenate(c)[best] for c in (cand_src, cand_mid, cand_dst))
        triples = [((int(x), int(y), int(z)), float(v))
                   for x, y, z, v in zip(s_, m_, d_, vals[best], strict=True)]
    chains[3] = triples[:top]
    return chains


def score_virtual_heads(reader: WeightReader, graph: ComposedGraph, *, top: int = 100,
                        device: str | torch.device = "cpu") -> list[VirtualHead]:
    """Exact scores of the strongest candidate virtual heads of length 2 and 3."""
    chains = candidate_chains(graph, top)
    wanted = sorted({int(graph.nodes.layers[i]) for cs in chains.values() for c, _ in cs
                     for i in c})
    if not wanted:
        return []
    dev = torch.device(device)
    spec = graph.spec
    kv = torch.arange(spec.n_heads, device=dev) // spec.group
    W_V: dict[int, torch.Tensor] = {}
    W_O: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for layer in wanted:
            lw = reader.layer(layer, mlp=False)
            W_V[layer] = lw.W_V.to(dev, torch.float32)[kv]  # (H, d, dh) per query head
            W_O[layer] = lw.W_O.to(dev, torch.float32)
        g = reader.globals()
        readout = g.W_U.to(dev, torch.float32) @ g.W_E.to(dev, torch.float32)
        del g

        def weights(node: int) -> tuple[torch.Tensor, torch.Tensor]:
            layer, head = int(graph.nodes.layers[node]), int(graph.nodes.heads[node])
            return W_V[layer][head], W_O[layer][head]

        out: list[VirtualHead] = []
        for chain_list in chains.values():
            for chain, heuristic in chain_list:
                parts = [weights(i) for i in chain]
                V1, O1 = parts[0]
                factor = qr_r(V1) @ O1  # (dh, d): ‖factor X‖ = ‖W_OV^1 X‖
                denom = float(frob(factor))
                middle = torch.eye(V1.shape[1], device=dev)
                prev_O = O1
                for W_v, W_o in parts[1:]:
                    factor = factor @ W_v @ W_o
                    denom *= float(frob(qr_r(W_v) @ W_o))
                    middle = middle @ (prev_O @ W_v)
                    prev_O = W_o
                core_V = V1 @ middle  # (d, dh): W_V^1 (W_O^1 W_V^2) ...
                pos, ratio = copying_scores(core_V[None], prev_O[None], readout,
                                            torch.zeros(1, dtype=torch.long, device=dev))
                out.append(VirtualHead(
                    heads=tuple(graph.nodes.names[i] for i in chain),
                    score=float(frob(factor)) / denom if denom > 0 else float("nan"),
                    heuristic=heuristic,
                    copying_positive_fraction=float(pos[0]),
                    copying_ratio=float(ratio[0]),
                ))
    return [v for v in out if np.isfinite(v.score)]
