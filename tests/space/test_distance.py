"""Distances against hand computations, the d_sym back-ends against each other, and their invariants."""

import numpy as np
import pytest
import torch

from task2vec import Embedding, IncompatibleEmbeddingsError, SettingError
from task2vec.space.distance import asymmetric, asymmetric_scores, complexity, cosine, domain, gaussian_kl, pairwise
from task2vec.embedding.dsym import BLOCK, symmetric, symmetric_matrix, symmetric_torch


def emb(vec, probe="p", method="exact", **kw):
    meta = {"probe": {"name": probe, "weights_hash": "h", "input_size": 224}, "method": {"name": method},
            "layers": [{"name": "l", "filters": len(vec)}]}
    return Embedding(np.asarray(vec, float), meta, **kw)


def test_symmetric_matches_hand_computation():
    a, b = np.array([1.0, 3.0, 0.0]), np.array([1.0, 1.0, 2.0])
    # a/(a+b) = [.5, .75, 0], b/(a+b) = [.5, .25, 1]
    an, bn = np.array([0.5, 0.75, 0.0]), np.array([0.5, 0.25, 1.0])
    expected = 1 - an @ bn / np.linalg.norm(an) / np.linalg.norm(bn)
    assert symmetric(a, b) == pytest.approx(expected)
    assert symmetric(b, a) == pytest.approx(expected)
    assert symmetric(a, a) == pytest.approx(0.0)
    # both zero in an entry: that entry counts as equal
    assert symmetric([0.0, 1.0], [0.0, 1.0]) == pytest.approx(0.0)


def test_symmetric_ignores_global_scale_but_not_shape():
    a = np.array([1.0, 2.0, 3.0])
    assert symmetric(a, 2 * a) == pytest.approx(0.0)
    assert symmetric(a, a * np.array([1.0, 2.0, 4.0])) > 0.01
    assert 0 <= symmetric(a, np.array([100.0, 0.0, 0.0])) <= 1


def nonnegative(n, d, seed):
    """Lognormal rows with exact zeros, some of them shared by every row (a + b = 0 there)."""
    rng = np.random.default_rng(seed)
    V = rng.lognormal(0, 2, (n, d)) * (rng.random((n, d)) > 0.2)
    V[:, :3] = 0.0
    V[:, 3] += 0.1  # no all-zero row: d_sym is undefined for one
    return V


def test_the_three_backends_agree():
    A, B = nonnegative(6, 300, seed=0), nonnegative(5, 300, seed=1)
    ref = np.array([[symmetric(a, b) for b in B] for a in A])  # numpy, float64
    assert np.array_equal(symmetric_matrix(A, B, engine="numpy"), ref)
    assert np.abs(symmetric_matrix(A, B) - ref).max() < 1e-6  # numba, float32 arithmetic
    torch_d = np.stack([symmetric_torch(torch.from_numpy(A), torch.from_numpy(b)).numpy() for b in B], axis=1)
    assert np.abs(torch_d - ref).max() < 1e-12
    assert np.abs(symmetric_matrix(A) - symmetric_matrix(A, A, engine="numpy")).max() < 1e-6  # each pair once
    # the same convention where both entries are zero, in every back-end
    zero = np.array([[0.0, 1.0, 2.0]])
    assert symmetric(zero, zero) == symmetric_matrix(zero)[0, 0] == symmetric_torch(torch.tensor(zero),
                                                                                     torch.tensor(zero)).item() == 0.0
    with pytest.raises(SettingError, match="unknown d_sym engine"):
        symmetric_matrix(A, engine="cuda")


def test_symmetric_torch_broadcasts_and_is_differentiable():
    A, B = nonnegative(5, 40, seed=2), nonnegative(5, 40, seed=3)
    np.testing.assert_allclose(symmetric_torch(torch.from_numpy(A), torch.from_numpy(B)).numpy(), symmetric(A, B),
                               rtol=1e-12, atol=1e-14)
    assert symmetric_torch(torch.from_numpy(A[2]), torch.from_numpy(A[2])).item() == pytest.approx(0.0, abs=1e-12)
    a = torch.from_numpy(A[1:3] + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: symmetric_torch(x, torch.from_numpy(B[1:3])), (a,))


def test_a_rows_value_does_not_depend_on_the_other_rows():
    V = nonnegative(300, 1001, seed=4).astype(np.float32)  # several blocks of rows
    assert V.size > BLOCK
    q = nonnegative(1, 1001, seed=5)[0]
    full = symmetric(V, q)
    assert all(symmetric(V[i:i + 1], q) == full[i] for i in range(0, 300, 7))
    perm = np.random.default_rng(0).permutation(300)
    assert np.array_equal(symmetric(V[perm], q), full[perm])
    assert np.array_equal(symmetric(V, np.tile(q, (300, 1))), full)  # a row broadcast or repeated


def test_asymmetric_scores_of_every_model_for_every_task():
    F, X, t0 = nonnegative(7, 50, seed=6), nonnegative(3, 50, seed=7), nonnegative(1, 50, seed=8)[0]
    S = asymmetric_scores(F, X, t0, 0.3)
    assert S.shape == (3, 7)
    c = complexity(F, t0)
    assert np.array_equal(S, np.stack([symmetric(F, x) for x in X]) - 0.3 * c)
    assert np.array_equal(S[1], asymmetric(F, X[1], t0, 0.3))
    assert np.array_equal(asymmetric_scores(F, X, t0, 0.3, model_complexity=c), S)
    assert np.array_equal(asymmetric_scores(F, X, t0, 0.0), symmetric_matrix(F, X, engine="numpy").T)
    assert np.abs(asymmetric_scores(F, X, t0, 0.3, engine="numba") - S).max() < 1e-6
    # torch tensors: the same complexity, and the score from given terms
    Ft, t0t = torch.from_numpy(F), torch.from_numpy(t0)
    np.testing.assert_allclose(complexity(Ft, t0t).numpy(), c, rtol=1e-12, atol=1e-14)
    sym = symmetric_torch(Ft, torch.from_numpy(X[1]))
    np.testing.assert_allclose(asymmetric_scores(Ft, None, t0t, 0.3, sym=sym).numpy(), S[1], rtol=1e-12, atol=1e-14)


def test_cosine_and_kl_by_hand():
    assert cosine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert cosine([1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.0)
    a, b = np.array([1.0, 4.0]), np.array([2.0, 1.0])  # inverse variances
    r = b / a
    kl_ab = 0.5 * np.mean(r - 1 - np.log(r))
    assert gaussian_kl(a, b, symmetrise=False) == pytest.approx(kl_ab)
    assert gaussian_kl(a, b) == pytest.approx(gaussian_kl(b, a))
    assert gaussian_kl(a, a) == pytest.approx(0.0)


def test_asymmetric_prefers_complex_related_source():
    rng = np.random.default_rng(0)
    t0 = np.ones(50)
    target = rng.gamma(2.0, 1.0, 50) + 2
    complex_related = target * rng.uniform(0.9, 1.1, 50) + 1.0  # close to target, far from t0
    trivial_source = t0 * 1.05  # a near-trivial source
    assert asymmetric(target, target, t0) < asymmetric(target, target, t0, alpha=0)
    # d_asym(a -> b) = d_sym(a, b) - alpha d_sym(a + t0, t0)
    a, b = complex_related, target
    assert asymmetric(a, b, t0, alpha=0.3) == pytest.approx(symmetric(a, b) - 0.3 * symmetric(a + t0, t0))
    assert asymmetric(complex_related, target, t0) < asymmetric(trivial_source, target, t0)


def test_complexity_is_the_posterior_distance_from_the_prior():
    t0 = np.array([1.0, 1.0])
    # Fisher embedding [3, 1]: posterior [4, 2], p = [4/5, 2/3], 1 - p = [1/5, 1/3]
    by_hand = 1 - (4 / 25 + 2 / 9) / np.sqrt((16 / 25 + 4 / 9) * (1 / 25 + 1 / 9))
    assert complexity([3.0, 1.0], t0) == pytest.approx(by_hand, rel=1e-12)
    assert complexity([0.0, 0.0], t0) == 0.0  # no information: the prior itself
    # more information along the same filters: farther from the prior
    c = [complexity(s * np.array([3.0, 1.0]), t0) for s in (0.1, 1.0, 10.0)]
    assert c[0] < c[1] < c[2]
    # a variational embedding already is a posterior: d_sym(a, t0), detected from t0's method
    var_t0 = emb(t0, method="variational")
    assert complexity(emb([4.0, 2.0], method="variational"), var_t0) == pytest.approx(by_hand, rel=1e-12)
    assert complexity([4.0, 2.0], t0, prior_included=True) == pytest.approx(by_hand, rel=1e-12)


def test_pairwise_matrix_equals_pairs_and_is_symmetric():
    rng = np.random.default_rng(1)
    vecs = rng.gamma(0.5, 1e-3, size=(7, 40))
    vecs[:, :3] = 0
    embs = [emb(v) for v in vecs]
    D = pairwise(embs, "sym")
    ref = np.array([[symmetric(a, b) for b in vecs] for a in vecs])
    np.testing.assert_allclose(D, ref, atol=1e-6)
    np.testing.assert_allclose(D, D.T)
    np.testing.assert_allclose(np.diag(D), 0, atol=1e-7)
    t0 = emb(np.full(40, 1e-3))
    A = pairwise(embs, "asym", t0=t0, alpha=0.2)
    np.testing.assert_allclose(A, ref - 0.2 * np.array([complexity(v, t0.vector) for v in vecs])[:, None], atol=1e-6)
    np.testing.assert_allclose(symmetric_matrix(vecs[:3], vecs[3:]), ref[:3, 3:], atol=1e-6)


def test_domain_distance_ignores_labels():
    m = np.array([1.0, 2.0, 3.0])
    a = emb([1.0, 2.0], domain_mean=m)
    b = emb([5.0, 0.1], domain_mean=m)  # same images, different labels
    assert domain(a, b) == pytest.approx(0.0)
    assert symmetric(a, b) > 0.1
    with pytest.raises(IncompatibleEmbeddingsError):
        domain(a, emb([1.0, 1.0]))


def test_mixing_probes_or_methods_is_an_error():
    with pytest.raises(IncompatibleEmbeddingsError, match="different probes"):
        pairwise([emb([1.0, 2.0]), emb([1.0, 2.0], probe="other")])
    with pytest.raises(IncompatibleEmbeddingsError, match="different probes or methods"):
        pairwise([emb([1.0, 2.0]), emb([1.0, 2.0], method="variational")])
    with pytest.raises(IncompatibleEmbeddingsError, match="needs the trivial task"):
        pairwise([emb([1.0, 2.0]), emb([2.0, 2.0])], "asym")


def test_saved_files_get_normal_permissions(tmp_path):
    import os

    path = emb([1.0, 2.0]).save(tmp_path / "e.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_pairwise_domain_cosine_and_kl_kinds():
    embs = [emb(v, method="variational", domain_mean=d)
            for v, d in (([1.0, 2.0], [1.0, 0.0]), ([2.0, 1.0], [0.0, 1.0]), ([1.0, 1.0], [1.0, 1.0]))]
    np.testing.assert_allclose(pairwise(embs, "domain")[0], [0.0, 1.0, 1 - 2 ** -0.5])
    np.testing.assert_allclose(pairwise(embs, "cosine")[0, 1], 1 - 4 / 5)
    np.testing.assert_allclose(pairwise(embs, "kl")[0, 1], gaussian_kl([1.0, 2.0], [2.0, 1.0]))
    with pytest.raises(IncompatibleEmbeddingsError, match="variational"):
        pairwise([emb([1.0, 2.0]), emb([2.0, 1.0])], "kl")
