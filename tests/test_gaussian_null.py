"""The Gaussian null's sampler (headgraph.ingest.null) against plain Gaussian weights.

``sample_null`` draws short factors (Bartlett's decomposition of a Wishart matrix, the
Gaussian weights themselves where that is fewer numbers) instead of whole weight
matrices. In law the score ``‖X Y‖_F / (‖X‖_F ‖Y‖_F)`` is the same, so its mean and
spread must match those of the score of whole Gaussian matrices, within sampling error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headgraph.ingest.null import OperandShape, sample_null

N = 3000  # samples of each side: the mean's standard error is std / 55


def naive(writer: OperandShape, reader: OperandShape, n: int, seed: int) -> np.ndarray:
    """Scores of whole Gaussian matrices: ``W_V W_O`` / ``W [rows, d]`` written, ``W_Q W_K^T``
    / ``W^T`` read, centred over ``d_model`` where the shape says so."""
    g = torch.Generator().manual_seed(seed)

    def gauss(*shape: int) -> torch.Tensor:
        return torch.randn(n, *shape, generator=g)

    d = writer.d_model
    if writer.kind == "head":
        x = gauss(d, writer.size) @ gauss(writer.size, d)
    else:
        x = gauss(writer.size, d)
    if writer.centred:
        x = x - x.mean(dim=-1, keepdim=True)
    if reader.kind == "head":
        y = gauss(d, reader.size) @ gauss(reader.size, d)
    else:
        y = gauss(reader.size, d).transpose(1, 2)
    if reader.centred:
        y = y - y.mean(dim=1, keepdim=True)
    num = torch.linalg.matrix_norm(x @ y).double()
    return (num / (torch.linalg.matrix_norm(x) * torch.linalg.matrix_norm(y))).numpy()


@pytest.mark.parametrize("writer, reader", [
    (OperandShape("head", 32, 8), OperandShape("head", 32, 8)),
    (OperandShape("head", 32, 8, centred=True), OperandShape("head", 32, 8)),
    (OperandShape("head", 32, 8), OperandShape("dense", 32, 100)),  # Bartlett (100 > 2 d)
    (OperandShape("dense", 32, 100, centred=True), OperandShape("head", 32, 8)),
    (OperandShape("dense", 32, 40), OperandShape("dense", 32, 20)),  # the matrices themselves
], ids=lambda s: s.label())
def test_the_sampled_null_has_the_law_of_gaussian_weights(writer, reader):
    got = sample_null(writer, reader, "K", samples=N)
    want = naive(writer, reader, N, seed=1)
    se = np.hypot(got.std, want.std(ddof=1)) / np.sqrt(N)
    assert abs(got.mean - want.mean()) < 4 * se, (got.mean, want.mean(), se)
    assert got.std == pytest.approx(want.std(ddof=1), rel=0.075)  # 4 SE of the std ratio
