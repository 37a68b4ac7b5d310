"""Which exact reduction scores head pairs: the QR product or block Grams.

Both give the same numbers (:mod:`.kernel` has the algebra); they differ in FLOPs and
memory. For ``L`` layers of ``H`` query heads (``H_kv`` key/value heads), width ``d`` and
head size ``d_h``, with ``n_t = t H`` source heads before target layer ``t``:

* *QR*: ``sum_t 2 n_t d_h d H d_h`` for Q-composition, and for K and V each
  ``sum_t (2 n_t d_h d H_kv d_h + 2 n_t d_h H d_h d_h)`` (one product per KV head, then a
  ``d_h x d_h`` core per query head; without grouping, the same as Q). Memory: the write
  factors, ``L H d_h d`` floats.
* *Block Gram*: a fraction ``f = (b + 1) / 2b`` of each ``d x d`` Gram is formed and
  multiplied (``b x b`` blocks, upper triangle). Source Grams ``L H 2 d_h d^2 f``, target
  Grams ``(L - 1) 3H 2 d_h d^2 f``, inner products ``sum_t n_t 3H 2 d^2 f``. Memory: every
  head's source Gram, ``L H d^2 f`` floats, held for the whole pass.

The Gram route wins roughly when ``d_h^2 > d`` (GPT-2 small: 3.1x fewer FLOPs); it is taken
when it needs fewer FLOPs and its Grams fit :data:`GRAM_BUDGET_BYTES`. Large models (gpt2-xl
would need 6 GB of Grams) stay on the QR route, whose memory is the factors alone.
"""

from __future__ import annotations

from typing import Literal

from headgraph.errors import BadInputError

HeadMethod = Literal["qr", "gram"]
METHODS = ("auto", "qr", "gram")
GRAM_BLOCK = 128
"""Width of a Gram block: 6 x 6 blocks for d_model 768. Forming a Gram is bound by writing
its output (64 multiply-adds per entry), so fewer entries (more, smaller blocks) pay until
the products get too small: gpt2-small head->head 0.62 s with 2 x 2 blocks, 0.44 s with
4 x 4, 0.42 s with 6 x 6 or 8 x 8 (measured on this machine)."""


def gram_edges(d: int, block: int = GRAM_BLOCK) -> tuple[int, ...]:
    """Boundaries of the ``b x b`` block grid over ``d`` (``b = ceil(d / block)``)."""
    b = max(1, -(-d // block))
    return tuple(round(i * d / b) for i in range(b + 1))


GRAM_BUDGET_BYTES = 1 << 30
"""Most memory the source Grams may take before the QR route is used instead."""


def gram_fraction(d: int) -> float:
    """Share of a ``d x d`` Gram formed by the block route (blocks on and above the diagonal)."""
    edges = gram_edges(d)
    sizes = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    upper = sum(sizes[p] * sizes[q] for p in range(len(sizes)) for q in range(p, len(sizes)))
    return upper / (d * d)


def head_pair_flops(L: int, H: int, n_kv: int, d: int, dh: int) -> dict[HeadMethod, float]:
    """FLOPs (2 per multiply-add) of all head->head Q/K/V scores by each route."""
    sources = [t * H for t in range(L)]
    q = sum(2 * n * dh * d * H * dh for n in sources)
    if n_kv < H:
        kv = sum(2 * n * dh * d * n_kv * dh + 2 * n * dh * H * dh * dh for n in sources)
    else:
        kv = q
    f = gram_fraction(d)
    gram = (L * H * 2 * dh * d * d * f + max(L - 1, 0) * 3 * H * 2 * dh * d * d * f
            + sum(n * 3 * H * 2 * d * d * f for n in sources))
    return {"qr": float(q + 2 * kv), "gram": float(gram)}


def gram_bytes(L: int, H: int, d: int) -> float:
    """Memory of every head's source Gram blocks (fp32)."""
    return L * H * d * d * gram_fraction(d) * 4


def choose_head_method(L: int, H: int, n_kv: int, d: int, dh: int, method: str = "auto",
                       budget: float = GRAM_BUDGET_BYTES) -> HeadMethod:
    """``"qr"`` or ``"gram"``: the one asked for, or (``"auto"``) the one with fewer FLOPs
    among those whose memory fits ``budget``."""
    if method not in METHODS:
        raise BadInputError(f"unknown head-pair method {method!r}; use one of "
                            f"{', '.join(METHODS)}.")
    if method != "auto":
        return method  # type: ignore[return-value]
    flops = head_pair_flops(L, H, n_kv, d, dh)
    if flops["gram"] < flops["qr"] and gram_bytes(L, H, d) <= budget:
        return "gram"
    return "qr"
