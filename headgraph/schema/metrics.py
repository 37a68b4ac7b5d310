"""Names of the evidence metrics stored in ``node_scores`` and ``edge_scores``.

An evidence metric names the *quantity* measured and the *method* that measured it, so
that an exact measurement and its estimates sit side by side on the same node or edge:

==========================  ====================  ========================================
metric                      method                quantity
==========================  ====================  ========================================
``ablation_{zero,mean}_dX``  ``exact``            the change of metric ``X`` (``loss``,
                                                  ``embed``) when the head's ``z`` is set to
                                                  0 / its mean, one forward pass each
``path_{zero,mean}_dloss``   ``exact``            the same for the edge's route alone (path
                                                  patching)
``attrib_<quantity>``        ``attribution``      its first-order estimate from gradients
                                                  (attribution patching; EAP for edges)
``ig_<quantity>``            ``integrated_gradients``  its EAP-IG estimate
``<role>_score``, ``_share`` ``patterns``         attention-pattern role scores
``loss``                     ``exact``            the clean metric (node ``UNEMBED``)
``<tool>:...``               ``tool``             imported from another tool's circuit file
==========================  ====================  ========================================

Both the write side (:mod:`headgraph.ingest.evidence`) and the read side (queries, the
API's ``Score.method``) name metrics through this module.
"""

from __future__ import annotations

METHOD_PREFIXES = {"attrib_": "attribution", "ig_": "integrated_gradients"}
"""Prefix of an estimated quantity -> the method that estimated it."""
APPROXIMATIONS = {v: k for k, v in METHOD_PREFIXES.items()}
EXACT_PREFIXES = ("ablation_", "path_")


def metric_method(metric: str) -> str:
    """``exact``, ``attribution``, ``integrated_gradients``, ``patterns`` or ``tool``."""
    if ":" in metric:
        return "tool"
    for prefix, method in METHOD_PREFIXES.items():
        if metric.startswith(prefix):
            return method
    if metric.startswith(EXACT_PREFIXES) or metric == "loss":
        return "exact"
    return "patterns"


def quantity_of(metric: str) -> str:
    """The exact quantity a metric measures or estimates (``attrib_path_mean_dloss`` ->
    ``path_mean_dloss``)."""
    for prefix in METHOD_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def estimate_of(quantity: str, method: str) -> str:
    """The metric name of ``method``'s estimate of ``quantity``."""
    return APPROXIMATIONS[method] + quantity
