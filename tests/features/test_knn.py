import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ctx_core.knn import TooFewCandidatesError, best_per_group, standardise, topk_correlation


def chunked(x: torch.Tensor, rows: int):
    return ((i, x[i:i + rows]) for i in range(0, len(x), rows))


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(23, 40, generator=gen), torch.randn(500, 40, generator=gen)


def test_standardise_gives_unit_rows_and_leaves_constant_rows_at_zero():
    x = torch.cat([torch.randn(3, 8), torch.full((1, 8), 5.0)])
    z = standardise(x)
    assert torch.allclose(z[:3].norm(dim=1), torch.ones(3)) and torch.allclose(z[:3].mean(dim=1), torch.zeros(3), atol=1e-6)
    assert torch.equal(z[3], torch.zeros(8))


@pytest.mark.parametrize("rows", [37, 500])
def test_topk_matches_scipy_brute_force(data, rows):
    q, c = data
    scores, found = topk_correlation(q, chunked(c, rows), 7, len(c))
    sim = 1 - cdist(q.numpy().astype(np.float64), c.numpy().astype(np.float64), "correlation")
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :7]
    assert np.array_equal(found.numpy(), expected)
    assert np.allclose(scores.numpy(), np.take_along_axis(sim, expected, 1), atol=1e-5)


def test_topk_skips_the_query_group(data):
    q, c = data
    qg = torch.arange(len(q)) % 5
    cg = torch.arange(len(c)) % 5
    _, found = topk_correlation(q, chunked(c, 64), 10, len(c), qg, cg)
    assert (cg[found] != qg[:, None]).all()
    sim = 1 - cdist(q.numpy(), c.numpy(), "correlation")
    sim[qg.numpy()[:, None] == cg.numpy()[None, :]] = -np.inf
    assert np.array_equal(found.numpy(), np.argsort(-sim, axis=1, kind="stable")[:, :10])


def test_topk_refuses_k_above_the_candidates(data):
    q, c = data
    with pytest.raises(TooFewCandidatesError, match=r"k = 501 is larger than the number of candidates \(500\)"):
        topk_correlation(q, chunked(c, 64), 501, len(c))


def test_best_per_group_matches_brute_force(data):
    q, c = data
    groups = torch.as_tensor(np.random.default_rng(1).integers(0, 9, len(c)))
    scores, rows = best_per_group(q, chunked(c, 41), groups, 10)
    sim = 1 - cdist(q.numpy().astype(np.float64), c.numpy().astype(np.float64), "correlation")
    for g in range(9):
        members = np.flatnonzero(groups.numpy() == g)
        best = members[sim[:, members].argmax(axis=1)]
        assert np.array_equal(rows[:, g].numpy(), best)
        assert np.allclose(scores[:, g].numpy(), sim[np.arange(len(q)), best], atol=1e-5)
    assert (rows[:, 9] == -1).all() and torch.isinf(scores[:, 9]).all()  # a group without candidates
