"""Transferability scores (LogME, LEEP, NCE) against brute force, hand computations and known limits."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from task2vec.errors import Task2VecError
from task2vec.zoo.transferability import SCORES, leep, logme, logme_evidence, nce


def _class_features(n: int, d: int, k: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Features = class mean + unit noise, labels cycling through all k classes."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % k)
    means = rng.normal(size=(k, d)) * signal
    return means[labels] + rng.normal(size=(n, d)), labels


def _brute_force_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of log N(y; 0, alpha^-1 F F^T + beta^-1 I) / N, by direct optimisation."""
    n = len(y)

    def negative(log_ab: np.ndarray) -> float:
        alpha, beta = np.exp(log_ab)
        return -multivariate_normal.logpdf(y, np.zeros(n), f @ f.T / alpha + np.eye(n) / beta) / n

    grid = [(la, lb) for la in (-4.0, 0.0, 4.0) for lb in (-2.0, 2.0)]
    start = min(grid, key=lambda p: negative(np.array(p)))
    best = minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000})
    return -best.fun


# seeds where every class's evidence peaks at finite alpha and beta (no interpolation limit beta -> inf)
@pytest.mark.parametrize("n, d, seed", [(20, 25, 2), (40, 6, 46)], ids=["N<D", "N>D"])
def test_logme_matches_brute_force_marginal_likelihood(n, d, seed):
    f, labels = _class_features(n, d, k=3, seed=seed)
    per_class = []
    for k in range(3):
        y = (labels == k).astype(float)
        expected = _brute_force_evidence(f, y)
        got = logme_evidence(f, y)
        assert got == pytest.approx(expected, abs=1e-3)
        assert got <= expected + 1e-9  # evaluated at some (alpha, beta): cannot beat the maximum
        per_class.append(got)
    assert logme(f, labels) == pytest.approx(np.mean(per_class), abs=1e-12)


def test_logme_evidence_of_a_real_valued_target_matches_brute_force():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(25, 4))
    y = f @ np.array([1.0, -0.5, 0.0, 2.0]) + 0.3 * rng.normal(size=25)
    assert logme_evidence(f, y) == pytest.approx(_brute_force_evidence(f, y), abs=1e-3)


def test_logme_prefers_features_that_separate_the_classes():
    f, labels = _class_features(300, 16, k=4, seed=0, signal=2.0)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert logme(f, labels) > logme(f, shuffled) + 0.05


def test_logme_ignores_gaps_in_label_values():
    f, labels = _class_features(60, 5, k=3, seed=4)
    assert logme(f, labels * 7 + 2) == pytest.approx(logme(f, labels), abs=1e-12)


def test_leep_hand_computation():
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1])
    # P(y, z) = mean_i 1[y_i = y] theta_z(x_i):
    #   y=0: z0 (0.9 + 0.6) / 4 = 0.375, z1 (0.1 + 0.4) / 4 = 0.125
    #   y=1: z0 (0.2 + 0.5) / 4 = 0.175, z1 (0.8 + 0.5) / 4 = 0.325
    # P(z0) = 0.55, P(z1) = 0.45, so P(0|z0) = 15/22, P(1|z0) = 7/22, P(0|z1) = 5/18, P(1|z1) = 13/18
    eep = [
        0.9 * 15 / 22 + 0.1 * 5 / 18,  # 0.641414...
        0.6 * 15 / 22 + 0.4 * 5 / 18,  # 0.520202...
        0.2 * 7 / 22 + 0.8 * 13 / 18,  # 0.641414...
        0.5 * 7 / 22 + 0.5 * 13 / 18,  # 0.520202...
    ]
    expected = sum(math.log(e) for e in eep) / 4  # -0.548809...
    assert leep(theta, labels) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.548809, abs=1e-6)


def test_leep_of_a_deterministic_source_to_target_map_is_zero():
    z = np.array([0, 1, 2, 2, 1, 0, 3, 3])
    theta = np.eye(4)[z]
    labels = np.array([0, 0, 1, 0])[z]  # source classes 0, 1, 3 -> target 0; 2 -> target 1
    assert leep(theta, labels) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_leep_is_never_positive(seed):
    rng = np.random.default_rng(seed)
    theta = rng.dirichlet(np.full(6, 0.3), size=50)
    labels = rng.integers(0, 3, size=50)
    labels[:3] = [0, 1, 2]
    assert leep(theta, labels) <= 1e-12


def test_nce_of_a_deterministic_map_is_zero():
    z = np.array([0, 1, 2, 2, 1, 0, 3, 3, 4])
    assert nce(z, np.array([1, 0, 1, 0, 1])[z]) == pytest.approx(0.0, abs=1e-12)


def test_nce_of_independent_labels_is_minus_log_k():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 5, size=200_000)
    labels = rng.integers(0, 4, size=200_000)
    assert nce(z, labels) == pytest.approx(-math.log(4), abs=5e-3)


def test_nce_hand_computation_and_probabilities_argmax():
    z = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([0, 0, 1, 1, 1, 1])
    # P(0, z0) = 2/6, P(1, z0) = 1/6, P(1, z1) = 3/6; P(z0) = P(z1) = 1/2
    expected = 2 / 6 * math.log(2 / 3) + 1 / 6 * math.log(1 / 3) + 3 / 6 * math.log(1.0)  # -0.318257...
    assert nce(z, labels) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.318257, abs=1e-6)
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.0, 1.0]])
    assert nce(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_registry_names_the_three_scores():
    assert SCORES == {"logme": logme, "leep": leep, "nce": nce}


FEATS = np.random.default_rng(0).normal(size=(6, 3))
PROBS = np.full((6, 2), 0.5)
LABELS = np.array([0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("call, message", [
    (lambda: logme(FEATS[:, 0], LABELS), r"features must be a non-empty 2-D array.*shape \(6,\)"),
    (lambda: logme(FEATS[:, :0], LABELS), r"features must be a non-empty 2-D array.*shape \(6, 0\)"),
    (lambda: logme(FEATS.astype(str), LABELS), r"features must be a real numeric array"),
    (lambda: logme(FEATS, LABELS[:5]), r"features has 6 rows but labels has 5 entries"),
    (lambda: leep(PROBS, LABELS[:4]), r"source_probs has 6 rows but labels has 4 entries"),
    (lambda: nce(LABELS, LABELS[:3]), r"source_labels has 6 rows but labels has 3 entries"),
    (lambda: logme(FEATS, np.zeros(6, dtype=int)), r"labels hold 1 distinct class.*\[0\].*at least 2"),
    (lambda: nce(LABELS, np.full(6, 3)), r"labels hold 1 distinct class.*\[3\]"),
    (lambda: logme(np.where(np.eye(6, 3) > 0, np.nan, FEATS), LABELS), r"features holds non-finite.*\(0, 0\).*nan"),
    (lambda: logme(FEATS, np.array([0, 1, -2, 1, 0, 1])), r"labels must hold integers >= 0.*labels\[2\] = -2"),
    (lambda: logme(FEATS, LABELS.astype(float)), r"labels must hold integers >= 0.*dtype float64"),
    (lambda: logme(FEATS, LABELS[:, None]), r"labels must be a 1-D array.*\(6, 1\)"),
    (lambda: nce(np.array([0, 1, 0, 1, 0, 1.5]), LABELS), r"source_labels must hold integers >= 0.*float64"),
    (lambda: leep(np.array([[1.2, -0.2]] * 6), LABELS), r"source_probs\[0, 1\] = -0.2 is negative"),
    (lambda: leep(np.array([[0.5, 0.5]] * 5 + [[0.5, 0.4]]), LABELS), r"source_probs row 5 sums to 0.9, not 1"),
    (lambda: nce(np.array([[0.5, 0.5]] * 5 + [[0.7, 0.4]]), LABELS), r"source_probs row 5 sums to 1.1, not 1"),
    (lambda: leep(np.full((6, 2), np.inf), LABELS), r"source_probs holds non-finite.*inf"),
    (lambda: logme_evidence(FEATS, np.ones(5)), r"y must be a 1-D array with one value per row of features \(6\)"),
    (lambda: logme_evidence(FEATS, np.array([0, 1, 2, 3, 4, np.nan])), r"y holds non-finite.*\(5,\).*nan"),
])
def test_bad_input_raises_a_typed_one_line_error(call, message):
    with pytest.raises(Task2VecError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_probability_rows_within_tolerance_are_accepted():
    probs = np.array([[0.5, 0.5005]] * 3 + [[0.2, 0.7995]] * 3)
    assert leep(probs, LABELS) <= 1e-12
