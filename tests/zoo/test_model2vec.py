"""MODEL2VEC: the fit's invariants and held-out selection in a synthetic world where the plain
embeddings mislead (records CSVs: test_records.py)."""

import numpy as np
import pytest

from task2vec import IncompatibleEmbeddingsError, RecordsError, Task2VecError
from task2vec.space.distance import ALPHA, asymmetric
from task2vec.zoo.model2vec import Model2Vec, leave_one_task_out

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def world(seed=0, n_models=6, layers=(10,) * 6, n_tasks=24, strength=1.0, noise=0.005):
    """Ground truth: model i really behaves like the vector G_i, but the zoo stores F_i = G_i with each
    layer rescaled by exp(N(0, strength)) (e.g. a training task embedded at another resolution).
    Tasks are mixtures of two true model vectors; errors grow linearly with the *true* d_asym."""
    rng = np.random.default_rng(seed)
    layers = np.asarray(layers)
    group = np.repeat(np.arange(len(layers)), layers)
    scale = np.exp(rng.normal(0, 1, len(layers)))[group]
    G = scale * rng.lognormal(0, 1, (n_models, layers.sum()))
    F = G * np.exp(rng.normal(0, strength, (n_models, len(layers)))[:, group])
    X = []
    for _ in range(n_tasks):
        a, b = rng.choice(n_models, 2, replace=False)
        w = rng.uniform(0.3, 1.0)
        X.append((w * G[a] + (1 - w) * G[b]) * rng.lognormal(0, 0.3, layers.sum()))
    X = np.array(X)
    t0 = 5 * scale * rng.lognormal(0, 1, layers.sum())
    ti = np.repeat(np.arange(n_tasks), n_models)
    mi = np.tile(np.arange(n_models), n_tasks)
    true = np.array([asymmetric(G[i], X[k], t0) for k, i in zip(ti, mi)])
    e = np.clip(0.1 + 0.5 * true + rng.normal(0, noise, len(true)), 0, 1)
    return F, X, (ti, mi, e), t0, layers.tolist()


# --------------------------------------------------------------------------- fit invariants

def test_fit_learns_biases_scores_with_them_and_is_deterministic():
    F, X, rec, t0, layers = world(seed=3, n_tasks=12)
    fit = Model2Vec(l2=0.01).fit(F, X, rec, t0, layers)
    assert fit.model_embeddings_.shape == fit.biases_.shape == F.shape
    np.testing.assert_allclose(fit.model_embeddings_, F + fit.biases_)
    assert (fit.model_embeddings_ >= 0).all() and np.abs(fit.biases_).max() > 0
    assert fit.log_scales_.shape == (6, 6) and list(fit.n_records_) == [12] * 6
    assert fit.kl_ < 0.5 * fit.kl_plain_ and fit.temperature_ > 0
    S = fit.score(X[:3])
    assert S.shape == (3, 6)
    np.testing.assert_allclose(S[1], asymmetric(fit.model_embeddings_, X[1], t0, ALPHA))
    np.testing.assert_array_equal(fit.rank(X[:3])[:, 0], S.argmin(1))
    again = Model2Vec(l2=0.01).fit(F, X, rec, t0, layers)
    np.testing.assert_array_equal(again.biases_, fit.biases_)
    # "filter" parameterisation: one log-scale per filter; fixed temperature is kept
    per_filter = Model2Vec(l2=0.01, parameterisation="filter", temperature=0.02).fit(F, X, rec, t0)
    assert per_filter.log_scales_.shape == F.shape and per_filter.temperature_ == 0.02


def test_chunked_checkpointed_pairs_fit_the_same_biases(monkeypatch):
    import task2vec.zoo.model2vec as m2v

    F, X, rec, t0, layers = world(seed=3, n_tasks=12)
    whole = Model2Vec(l2=0.01, max_iter=20).fit(F, X, rec, t0, layers)
    monkeypatch.setattr(m2v, "CHUNK_ELEMENTS", 5 * F.shape[1])  # 5 pairs per checkpointed chunk
    chunked = Model2Vec(l2=0.01, max_iter=20).fit(F, X, rec, t0, layers)
    np.testing.assert_allclose(chunked.biases_, whole.biases_, rtol=1e-9, atol=1e-12)


def test_model_without_records_keeps_its_embedding_and_heavy_l2_gives_plain_embeddings():
    F, X, (ti, mi, e), t0, layers = world(seed=1, n_tasks=10)
    keep = mi != 4  # model 4 never recorded
    keep[(ti == 0) & (mi != 0)] = False  # task 0 has one record: no ranking to learn from it
    fit = Model2Vec(l2=0.01).fit(F, X, (ti[keep], mi[keep], e[keep]), t0, layers)
    assert fit.n_records_[4] == 0 and fit.n_records_[0] == 9  # task 0's lone record is not used
    assert np.all(fit.biases_[4] == 0) and np.abs(fit.biases_[[0, 1, 2, 3, 5]]).max() > 0
    heavy = Model2Vec(l2=1e6).fit(F, X, (ti, mi, e), t0, layers)
    assert np.abs(heavy.log_scales_).max() < 1e-4
    np.testing.assert_allclose(heavy.score(X[:2]), [asymmetric(F, x, t0) for x in X[:2]], atol=1e-5)


# --------------------------------------------------------------------------- held-out selection

def test_model2vec_beats_plain_embeddings_on_held_out_tasks():
    F, X, rec, t0, layers = world(seed=1)
    r = leave_one_task_out(F, X, rec, t0, layer_sizes=layers)  # default settings
    s = r["summary"]
    assert r["n_tasks"] == 24 and r["n_fallback"] == 0 and set(s) == {"asymmetric", "model2vec", "chance", "oracle"}
    # plain d_asym is misled by the rescaled layers; the learned biases undo most of it
    assert s["model2vec"]["relative_error_increase"] < 0.5 * s["asymmetric"]["relative_error_increase"]
    assert s["model2vec"]["regret"] < s["asymmetric"]["regret"]
    assert s["model2vec"]["weighted_tau"] > s["asymmetric"]["weighted_tau"]
    assert s["asymmetric"]["relative_error_increase"] < s["chance"]["relative_error_increase"]
    assert s["oracle"]["regret"] == 0 and s["oracle"]["weighted_tau"] == pytest.approx(1.0)
    assert s["chance"]["top1"] == pytest.approx(1 / 6)
    assert r["per_task"]["model2vec"]["pick"].shape == (24,)


def test_held_out_task_never_enters_its_own_fit():
    F, X, (ti, mi, e), t0, layers = world(seed=2, n_tasks=6)
    r1 = leave_one_task_out(F, X, (ti, mi, e), t0, layer_sizes=layers, l2=0.01, max_iter=30)
    e2 = e.copy()
    e2[ti == 0] = e2[ti == 0][::-1]  # change task 0's own errors: its model2vec scores must not move
    r2 = leave_one_task_out(F, X, (ti, mi, e2), t0, layer_sizes=layers, l2=0.01, max_iter=30)
    assert r1["per_task"]["model2vec"]["pick"][0] == r2["per_task"]["model2vec"]["pick"][0]
    # but the other tasks' fits saw the change
    assert not np.array_equal(r1["per_task"]["model2vec"]["weighted_tau"][1:],
                              r2["per_task"]["model2vec"]["weighted_tau"][1:])


# --------------------------------------------------------------------------- input checks

def test_bad_inputs_are_one_line_errors():
    F, X, (ti, mi, e), t0, layers = world(seed=0, n_tasks=4)
    ok = (ti, mi, e)
    m = Model2Vec()
    nan = F.copy()
    nan[2, 5] = np.nan
    neg = X.copy()
    neg[1, 3] = -1.0
    zero = F.copy()
    zero[3] = 0.0
    cases = [
        ((F[0], X, ok, t0), Task2VecError, "model_vectors must be a non-empty 2-D"),
        ((nan, X, ok, t0), Task2VecError, r"model_vectors\[2, 5\] = nan is not finite"),
        ((F, neg, ok, t0), Task2VecError, r"task_vectors\[1, 3\] = -1.0 is negative"),
        ((zero, X, ok, t0), Task2VecError, r"model_vectors\[3\] is all zeros"),
        ((F, X[:, :-1], ok, t0), IncompatibleEmbeddingsError, "task_vectors has 59 filters"),
        ((F, X, ok, t0[:-1]), IncompatibleEmbeddingsError, "t0 has 59 filters"),
        ((F, X, (ti[:0], mi[:0], e[:0]), t0), RecordsError, "no records"),
        ((F, X, (ti + 1, mi, e), t0), RecordsError, r"task_idx\[18\] = 4 is out of range \[0, 4\)"),
        ((F, X, (ti, mi - 1, e), t0), RecordsError, r"model_idx\[0\] = -1 is out of range"),
        ((F, X, (ti, mi, e * 10), t0), RecordsError, r"error\[0\] = .* is not an error rate"),
        ((F, X, (ti, mi, np.where(ti == 1, np.nan, e)), t0), RecordsError, r"error\[6\] = nan"),
        ((F, X, (ti * 1.5, mi, e), t0), RecordsError, r"task_idx\[6\] = 1.5 is not an integer"),
        ((F, X, (np.r_[ti, 0], np.r_[mi, 0], np.r_[e, 0.2]), t0), RecordsError, "duplicate records for task 0 on model 0"),
        ((F, X, (ti, mi), t0), RecordsError, "three arrays"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match) as info:
            m.fit(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(IncompatibleEmbeddingsError, match="layer_sizes add up to 50"):
        m.fit(F, X, ok, t0, [10] * 5)
    for kw, match in (({"l2": -1}, "l2 must be"), ({"parameterisation": "model"}, "parameterisation must be"),
                      ({"temperature": 0}, "temperature must be"), ({"max_iter": 0}, "max_iter")):
        with pytest.raises(Task2VecError, match=match):
            Model2Vec(**kw)
    with pytest.raises(Task2VecError, match="not fitted"):
        Model2Vec().score(X)
    with pytest.raises(RecordsError, match="two or more models"):
        leave_one_task_out(F, X, (np.arange(4), np.zeros(4, int), e[:4]), t0)
