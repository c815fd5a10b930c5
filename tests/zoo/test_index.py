"""AsymmetricIndex: exact top-k when every entry is re-ranked, recall when the surrogate chooses, inputs."""

import glob
import os
from pathlib import Path

import numpy as np
import pytest

from task2vec import SearchIndexError
from task2vec.space.distance import ALPHA, asymmetric, symmetric
from task2vec.zoo.index import AsymmetricIndex, brute_force

REPO = Path(__file__).resolve().parents[2]


def random_zoo(n=400, d=64, seed=0, zeros=0.1):
    """Unstructured positive vectors with exact zeros sprinkled in."""
    rng = np.random.default_rng(seed)
    V = rng.gamma(0.5, 1.0, (n, d))
    V[rng.random((n, d)) < zeros] = 0.0
    V[:, 0] = rng.gamma(0.5, 1.0, n) + 0.1  # no all-zero row
    return V


def structured_zoo(n, d, n_queries=20, seed=0, latent=8):
    """Like real task embeddings: a per-filter level, geometric mixtures of a few task directions,
    per-row noise and scale, ~0.5% exact zeros. Queries are further rows (not in the zoo)."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 2.0, d)
    dirs = rng.normal(0, 0.6, (latent, d))
    m = n + n_queries
    W = rng.dirichlet(np.full(latent, 0.3), m)
    logs = level + W @ dirs + rng.uniform(0.08, 0.25, (m, 1)) * rng.standard_normal((m, d))
    X = np.exp(logs + rng.normal(0, 0.5, (m, 1)))
    X[rng.random((m, d)) < 0.005] = 0.0
    t0 = np.exp(level + rng.normal(0, 1.0, d))  # a prior of the rows' scale: the complexity term matters
    return X[:n], X[n:], t0


def reference_topk(V, Q, t0, k, alpha=ALPHA):
    """Top-k by distance.asymmetric, ties by index."""
    S = np.stack([asymmetric(V, q, t0, alpha) for q in Q])
    order = np.argsort(S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, 1), order


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


# --------------------------------------------------------------------------- exactness

def test_exact_scores_are_those_of_distance_asymmetric_whatever_the_candidates():
    V = random_zoo(60, 1001, seed=3).astype(np.float32)
    t0 = random_zoo(1, 1001, seed=5)[0]
    q = random_zoo(1, 1001, seed=4)[0] * 1e6  # p ~ 1 almost everywhere
    index = AsymmetricIndex(t0).fit(V)
    s, i = index.search(q, k=60)
    exact = asymmetric(V, q, t0)
    assert np.array_equal(s[0], exact[i[0]])  # the same function, the same bits
    few = AsymmetricIndex(t0, rerank=5).fit(V)  # a surrogate index re-ranks 5 candidates
    fs, fi = few.search(q, k=5)
    assert np.array_equal(fs[0], exact[fi[0]])


@pytest.mark.parametrize("seed", [0, 1])
def test_flat_equals_brute_force_on_random_zoos(seed):
    V = random_zoo(400, 64, seed=seed)
    Q = random_zoo(6, 64, seed=seed + 10)
    Q[:, 1:4] = 0.0
    t0 = random_zoo(1, 64, seed=seed + 20)[0]
    index = AsymmetricIndex(t0, kind="flat").fit(V)
    assert index.index_ is None  # small zoo: every entry re-ranked
    s, i = index.search(Q, k=7)
    bs, bi = brute_force(V, Q, t0, k=7)
    assert s.dtype == np.float64 and i.dtype == np.int64 and s.shape == i.shape == (6, 7)
    assert np.array_equal(i, bi) and np.array_equal(s, bs)
    rs, ri = reference_topk(V, Q, t0, 7)
    assert np.array_equal(i, ri)
    assert np.abs(s - rs).max() < 1e-12
    assert np.all(np.diff(s, axis=1) >= 0)
    assert np.allclose(index.complexity_, symmetric(V + t0, t0), rtol=0, atol=1e-12)


def test_numba_brute_force_agrees():
    V, Q, t0 = structured_zoo(500, 128, n_queries=4, seed=3)
    s, i = brute_force(V, Q, t0, k=5)
    s2, i2 = brute_force(V, Q, t0, k=5, engine="numba")
    assert np.abs(s - s2).max() < 1e-5 and recall(i2, i) >= 0.95


def test_ties_are_broken_by_index_and_k_is_clipped():
    base = random_zoo(3, 16, seed=4)
    V = np.repeat(base, 4, axis=0)  # rows 0-3 equal, 4-7 equal, 8-11 equal
    t0 = np.ones(16)
    index = AsymmetricIndex(t0, alpha=0.0).fit(V)
    s, i = index.search(base[1], k=6)
    assert i.shape == (1, 6)
    assert list(i[0, :4]) == [4, 5, 6, 7] and s[0, 0] == 0.0
    assert list(i[0, 4:]) == sorted(i[0, 4:])
    s, i = index.search(base[1], k=100)
    assert s.shape == (1, 12) and np.all(np.diff(s[0]) >= 0)


def test_memmap_and_row_objects_are_indexed_by_reference(tmp_path):
    V, Q, t0 = structured_zoo(300, 48, n_queries=3, seed=5)
    mm = np.lib.format.open_memmap(tmp_path / "zoo.npy", mode="w+", dtype=np.float32, shape=V.shape)
    mm[:] = V
    mm.flush()
    mm = np.load(tmp_path / "zoo.npy", mmap_mode="r")

    class Rows:
        def __init__(self, data):
            self.data, self.calls = data, 0

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            self.calls += 1
            return self.data[np.asarray(idx)]

    rows = Rows(np.asarray(mm))
    ref = AsymmetricIndex(t0).fit(np.asarray(mm, dtype=np.float32)).search(Q, 5)
    for zoo in (mm, rows):
        index = AsymmetricIndex(t0).fit(zoo)
        assert index.vectors_ is zoo
        got = index.search(Q, 5)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    assert rows.calls > 1  # read in chunks


# --------------------------------------------------------------------------- the surrogate

def test_surrogate_approximates_dsym_for_close_tasks():
    rng = np.random.default_rng(6)
    V, _, t0 = structured_zoo(1000, 512, seed=6)
    a = V[:20] + 1e-3 * V.mean()
    b = a * np.exp(0.1 * rng.standard_normal(a.shape))
    exact = symmetric(a, b)
    # without a floor: ||x(a) - x(b)||^2 = Var(log a - log b) / 2 ~ d_sym for a small spread
    index = AsymmetricIndex(t0, eps_rel=1e-9).fit(V)
    X, Y = index.surrogate_coordinates(a)[0], index.surrogate_coordinates(b)[0]
    assert np.all(np.abs(((X - Y) ** 2).sum(1) / exact - 1) < 0.1)
    # the default floor shrinks differences; the fitted slope puts them back on d_sym's scale
    index = AsymmetricIndex(t0, rerank=100).fit(V)  # a surrogate index: calibrated at fit
    assert index.calibration_recall_ is not None and index.scale_ > 1
    X, Y = index.surrogate_coordinates(a)[0], index.surrogate_coordinates(b)[0]
    assert np.all(np.abs(index.scale_ * ((X - Y) ** 2).sum(1) / exact - 1) < 0.25)


def test_exhaustive_flat_calibrates_only_on_demand():
    V, Q, t0 = structured_zoo(300, 64, n_queries=2, seed=12)
    index = AsymmetricIndex(t0).fit(V)
    assert index.index_ is None and index.calibration_recall_ is None and index.scale_ == 1.0
    sur = index.surrogate_scores(Q)
    assert sur.shape == (2, 300) and index.calibration_recall_ is not None


def test_flat_with_fewer_candidates_than_entries_keeps_recall():
    V, Q, t0 = structured_zoo(3000, 256, seed=7)
    index = AsymmetricIndex(t0, kind="flat", rerank=100).fit(V)
    assert index.index_ is not None
    s, i = index.search(Q, k=10)
    bs, bi = brute_force(V, Q, t0, k=10)
    assert recall(i, bi) >= 0.9
    exact = np.stack([asymmetric(V[i[j]], Q[j], t0) for j in range(len(Q))])
    assert np.abs(s - exact).max() < 1e-12  # returned scores are exact
    assert np.all(s[:, -1] >= bs[:, -1] - 1e-15)


def test_ivfpq_recall():
    V, Q, t0 = structured_zoo(20000, 256, seed=8)
    index = AsymmetricIndex(t0, kind="ivfpq", pca_dim=32, pq_m=8, nprobe=32, seed=0).fit(V)
    assert index.nlist_ == 512 and index.pca_components_.shape == (30, 256)
    s, i = index.search(Q, k=10)
    bs, bi = brute_force(V, Q, t0, k=10)
    assert recall(i, bi) >= 0.9
    assert np.all(np.diff(s, axis=1) >= 0)
    again = AsymmetricIndex(t0, kind="ivfpq", pca_dim=32, pq_m=8, nprobe=32, seed=0).fit(V).search(Q, k=10)
    assert np.array_equal(again[1], i)  # deterministic


def real_embeddings():
    from task2vec import Embedding

    folder = os.environ.get("TASK2VEC_EMBEDDINGS", REPO / "examples" / "out")
    files = sorted(glob.glob(os.path.join(folder, "*.t2v.npz")))
    if len(files) < 5:
        pytest.skip(f"fewer than 5 real embeddings under {folder} (set TASK2VEC_EMBEDDINGS)")
    return np.stack([Embedding.load(f).vector for f in files])


def test_real_embeddings_exact_top_k_and_surrogate_rank():
    from scipy.stats import spearmanr

    E = real_embeddings()
    rng = np.random.default_rng(9)
    # a real-dimension zoo: the real embeddings and noisy copies of them (zeros kept)
    V = np.vstack([E, np.repeat(E, 8, axis=0) * np.exp(0.2 * rng.standard_normal((8 * len(E), E.shape[1])))])
    t0 = E.mean(0) * 100 * np.exp(rng.standard_normal(E.shape[1]))
    Q = E[:4] * np.exp(0.1 * rng.standard_normal((4, E.shape[1])))
    index = AsymmetricIndex(t0).fit(V)
    s, i = index.search(Q, k=5)
    rs, ri = reference_topk(V, Q, t0, 5)
    assert np.array_equal(i, ri) and np.abs(s - rs).max() < 1e-12
    # leave-one-out ranking of the real tasks: surrogate vs exact
    rho = []
    for j in range(len(E)):
        zoo = np.delete(E, j, 0)
        sur = AsymmetricIndex(t0).fit(zoo).surrogate_scores(E[j])[0]
        rho.append(spearmanr(sur, asymmetric(zoo, E[j], t0)).correlation)
    assert np.median(rho) > 0.7


# --------------------------------------------------------------------------- bad input

T0 = np.ones(8)
ZOO = random_zoo(20, 8, seed=11)


@pytest.mark.parametrize("make", [
    lambda: AsymmetricIndex(T0, kind="hnsw"),
    lambda: AsymmetricIndex(T0, alpha=-0.1),
    lambda: AsymmetricIndex(T0, alpha=float("nan")),
    lambda: AsymmetricIndex(T0, device="tpu"),
    lambda: AsymmetricIndex(T0, rerank=0),
    lambda: AsymmetricIndex(T0, kind="ivfpq", pca_dim=30, pq_m=16),
    lambda: AsymmetricIndex(T0, eps_rel=0),
    lambda: AsymmetricIndex(np.array([1.0, np.nan])),
    lambda: AsymmetricIndex(np.array([1.0, -1.0])),
    lambda: AsymmetricIndex(np.zeros(8)),
    lambda: AsymmetricIndex(np.ones((2, 4))),
    lambda: AsymmetricIndex(T0).fit(np.empty((0, 8))),
    lambda: AsymmetricIndex(T0).fit(np.ones(8)),
    lambda: AsymmetricIndex(T0).fit(ZOO[:, :5]),
    lambda: AsymmetricIndex(T0).fit(np.vstack([ZOO, np.full(8, np.nan)])),
    lambda: AsymmetricIndex(T0).fit(np.vstack([ZOO, np.full(8, np.inf)])),
    lambda: AsymmetricIndex(T0).fit(np.vstack([ZOO, -np.ones(8)])),
    lambda: AsymmetricIndex(T0).fit(np.vstack([ZOO, np.zeros(8)])),
    lambda: AsymmetricIndex(T0, kind="ivfpq").fit(ZOO),
    lambda: AsymmetricIndex(T0).search(ZOO[:2]),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(ZOO[:2, :5]),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(np.ones(9)),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(-ZOO[:2]),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(np.full(8, np.nan)),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(ZOO[:2], k=0),
    lambda: AsymmetricIndex(T0).fit(ZOO).search(ZOO[:2], k=2.5),
    lambda: brute_force(ZOO, ZOO[:2], T0, k=0),
    lambda: brute_force(ZOO, ZOO[:2], np.ones(5)),
    lambda: brute_force(ZOO, ZOO[:2], T0, alpha=-1),
    lambda: brute_force(ZOO, ZOO[:2], T0, engine="cuda"),
])
def test_bad_input_raises_search_index_error(make):
    with pytest.raises(SearchIndexError) as info:
        make()
    assert "\n" not in str(info.value)


def test_cuda_unavailable_is_an_error():
    import faiss
    import torch

    if hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available():
        pytest.skip("CUDA faiss available")
    with pytest.raises(SearchIndexError, match="cuda"):
        AsymmetricIndex(T0, device="cuda").fit(ZOO)
    assert AsymmetricIndex(T0, device="auto").fit(ZOO).device_ == "cpu"
