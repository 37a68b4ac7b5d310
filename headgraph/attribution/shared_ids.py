"""Node ids that two nodes share, and which of them each link means.

circuit-tracer names a transcoder feature ``{layer}_{feature}_{pos}`` and the MLP
reconstruction error of layer ``l`` at position ``p`` ``0_{l}_{p}``
(``frontend/graph_models.py``, ``Node.feature_node`` / ``Node.error_node``): a layer-0
feature whose index is below the number of layers has the id of an error node, and when
both survive pruning the file holds two nodes with one ``node_id`` (Neuronpedia's
featured graph ``gemma-dollar``: ``0_2_1`` is the feature layer 0 / index 2 / position 1
and the error of layer 2 at position 1). Links name nodes by id only, so a link naming
such an id is ambiguous. Ids are therefore opaque here: they may repeat across
``feature_type``; each node is one row (its file position ``idx`` is its identity, its
``key`` is ``node_id`` when unique, else ``node_id@idx``), exports write the file's ids
back, and each link naming a shared id is given to one of its nodes, by these rules in
turn (each applied only if some pair of ends passes it):

1. **layers**: a link runs from a lower ``layer`` to a higher one (``E`` lowest, logits
   highest): circuit-tracer's features read the residual stream before their layer's MLP
   and errors write after it, so nothing feeds its own layer or a lower one. When both
   ends are shared, the pair of nodes is chosen together.
2. **roles**: circuit-tracer's error and embedding nodes have no in-links (their rows of
   the adjacency matrix are zero) and logits no out-links.
3. **file order**: of what is left, the last node in the file, as Neuronpedia's frontend
   takes it (``utils.ts``: ``pyNodeIdToNode[d.node_id] = d`` keeps the last node of an
   id, and every link of the id is its). The import says how many links this decided.

On ``gemma-dollar``: 2 links enter ``0_2_1`` (from tokens: the feature, by rule 2), 79
leave it: 10 to layers 0-2 (the feature, by rule 1), 69 to higher layers and the logits
(undecidable: the error, as Neuronpedia draws them). Two nodes of one ``feature_type`` with one id make every
link of it meaningless and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headgraph.attribution.pruning import ERROR, LOGIT, TOKEN
from headgraph.errors import BadInputError


def node_key(node_id: str, idx: int, shared: bool) -> str:
    """A node's unique key: its id, or ``id@idx`` (file position) when the id is shared."""
    return f"{node_id}@{idx}" if shared else node_id


def shared_groups(ids: list[str], feature_types: list[object]) -> dict[str, tuple[int, ...]]:
    """Every id held by more than one node, with those nodes' file positions (in order);
    :class:`BadInputError` when two of them have the same ``feature_type``."""
    first: dict[str, int] = {}
    groups: dict[str, list[int]] = {}
    for i, node_id in enumerate(ids):
        j = first.setdefault(node_id, i)
        if j != i:
            groups.setdefault(node_id, [j]).append(i)
    for node_id, members in groups.items():
        kinds = [feature_types[i] for i in members]
        for a, kind in enumerate(kinds):
            if kind in kinds[:a]:
                raise BadInputError(
                    f"node id {node_id!r} is held by two nodes of feature_type {kind!r} (file "
                    f"positions {members[kinds.index(kind)]} and {members[a]}): its links "
                    "cannot be told apart. Ids may repeat only across feature types "
                    "(circuit-tracer's error and layer-0 feature ids do).")
    return {k: tuple(v) for k, v in groups.items()}


@dataclass(frozen=True)
class Placement:
    """What :func:`place_links` did: links moved off an id's first node, and those whose
    node the file could not tell (given to the last candidate)."""

    moved: int
    by_file_order: int


def _stage(value: object) -> float:
    """Where a node's ``layer`` puts it in the forward pass: ``E`` (embeddings) first,
    then the number (logits are ``n_layers + 1``); NaN when the file's layer says nothing."""
    if value == "E":
        return -1.0
    try:
        return float(str(value))
    except ValueError:
        return np.nan


def place_links(source: np.ndarray, target: np.ndarray, groups: dict[str, tuple[int, ...]],
                roles: np.ndarray, layers: list[object]) -> Placement:
    """Give each link naming a shared id one of its nodes (module table), in place.
    ``source``/``target`` hold the position of the *first* node of each id (what an id
    lookup finds); ``roles`` and ``layers`` are by position."""
    stage = np.array([_stage(x) for x in layers], np.float64)
    members = {g[0]: g for g in groups.values()}
    firsts = np.array(sorted(members))
    touched = np.flatnonzero(np.isin(source, firsts) | np.isin(target, firsts))
    moved = undecided = 0
    for at in touched.tolist():
        s0, t0 = int(source[at]), int(target[at])
        pairs = [(s, t) for s in members.get(s0, (s0,)) for t in members.get(t0, (t0,))]
        forward = [(s, t) for s, t in pairs if not stage[s] >= stage[t]]  # NaN: allowed
        pairs = forward or pairs
        if t0 in members:  # circuit-tracer's errors and embeddings have no in-links
            fed = [(s, t) for s, t in pairs if roles[t] not in (ERROR, TOKEN)]
            pairs = fed or pairs
        if s0 in members:  # nor do logits have out-links
            feeding = [(s, t) for s, t in pairs if roles[s] != LOGIT]
            pairs = feeding or pairs
        undecided += len(pairs) > 1
        s, t = max(pairs, key=lambda p: (p[1], p[0]))  # the last, as Neuronpedia keeps it
        moved += (s, t) != (s0, t0)
        source[at], target[at] = s, t
    return Placement(moved, undecided)
