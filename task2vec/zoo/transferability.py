"""Transferability scores: rank pretrained models for a target task without fine-tuning.

Plain arrays in, plain numbers out. Each score looks at one pretrained model on the target data
(N labelled samples) and returns one float; compute it for every candidate model and fine-tune
the one that scores highest. Higher is better for all three scores.

- ``logme(features, labels)``: LogME (You et al., ICML 2021). Needs the model's features (N, D),
  usually the raw penultimate-layer activations; they are used as given (no centring or scaling).
- ``leep(source_probs, labels)``: LEEP (Nguyen et al., ICML 2020). Needs the model's
  source-class probabilities (N, Z) (softmax outputs of its original classifier head); at most 0.
- ``nce(source_labels_or_probs, labels)``: NCE (Tran et al., ICCV 2019). Needs the model's hard
  source-class predictions (N,), or its source-class probabilities (N, Z) whose argmax is taken;
  at most 0.

Target labels are integers >= 0 (gaps are allowed: only the classes present count) and at least
two distinct classes must be present. Bad input raises ``Task2VecError`` with a one-line message.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import Task2VecError

LOGME_TOL = 1e-3  # stop when alpha and beta both change by less than this, relatively
LOGME_MAX_ITER = 100
PROB_TOL = 1e-3  # probability rows must sum to 1 within this
_EPS = 1e-12  # guards zeros in LEEP's divisions and log
_PRECISION_RANGE = (1e-30, 1e30)  # alpha and beta stay finite on degenerate inputs (e.g. all-zero features)


def _numeric(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise Task2VecError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise Task2VecError(f"{name} holds non-finite values (first at index {where}: {arr[where]})")
    return arr


def _matrix(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise Task2VecError(f"{name} must be a non-empty 2-D array (N, D), got shape {arr.shape}")
    return _numeric(arr, name)


def _probs(a: np.ndarray, name: str) -> np.ndarray:
    p = _matrix(a, name)
    if (p < 0).any():
        i, j = (int(v) for v in np.argwhere(p < 0)[0])
        raise Task2VecError(f"{name}[{i}, {j}] = {p[i, j]} is negative; rows must be probabilities")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROB_TOL
    if bad.any():
        i = int(np.argmax(bad))
        raise Task2VecError(f"{name} row {i} sums to {sums[i]:.6g}, not 1 (tolerance {PROB_TOL})")
    return p


def _int_vector(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise Task2VecError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise Task2VecError(f"{name} must hold integers >= 0, got dtype {arr.dtype}")
    if (arr < 0).any():
        i = int(np.argmax(arr < 0))
        raise Task2VecError(f"{name} must hold integers >= 0, got {name}[{i}] = {arr[i]}")
    return arr.astype(np.int64)


def _targets(labels: np.ndarray, rows: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Labels re-indexed to 0..K-1 over the classes present, and K (at least 2); one label per row of ``rows``."""
    y = _int_vector(labels, "labels")
    if len(y) != len(rows):
        raise Task2VecError(f"{name} has {len(rows)} rows but labels has {len(y)} entries")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise Task2VecError(f"labels hold {len(classes)} distinct class(es) {classes.tolist()}; need at least 2")
    return index.reshape(-1), len(classes)


def _spectrum(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero eigenvalues s (r,) of F^T F (zeros elsewhere), squared projections z2 (r, K) of the targets on the
    matching left singular vectors of F, and each target's squared norm outside their span (K,).

    r = min(N, D): the smaller of the two Gram matrices F F^T and F^T F is decomposed."""
    n, d = f.shape
    wide = n < d
    s, q = np.linalg.eigh(f @ f.T if wide else f.T @ f)
    keep = s > max(s.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps
    s = np.where(keep, s, 0.0)
    if wide:  # q is an orthonormal basis of R^N: nothing lies outside
        return s, (q.T @ y) ** 2, np.zeros(y.shape[1])
    x2 = (q.T @ (f.T @ y)) ** 2  # = s * z2
    z2 = np.where(keep[:, None], x2 / np.where(keep, s, 1.0)[:, None], 0.0)
    return s, z2, np.maximum((y**2).sum(axis=0) - z2.sum(axis=0), 0.0)


def _max_evidence(s: np.ndarray, z2: np.ndarray, outside: np.ndarray, n: int, d: int,
                  tol: float, max_iter: int) -> np.ndarray:
    """Per-sample log evidence (K,) at the MacKay fixed point over (alpha, beta), one per target column."""
    k = z2.shape[1]
    alpha, beta = np.ones(k), np.ones(k)
    active = np.ones(k, dtype=bool)
    sc = s[:, None]
    for _ in range(max_iter):
        a = alpha + beta * sc  # eigenvalues of A = alpha I + beta F^T F on the span of F, (r, K)
        gamma = (beta * sc / a).sum(axis=0)
        m2 = (beta**2 * sc * z2 / a**2).sum(axis=0)  # ||m||^2, m the posterior mean of w
        res2 = outside + (alpha**2 * z2 / a**2).sum(axis=0)  # ||y - F m||^2
        new_alpha = np.clip(gamma / np.maximum(m2, _PRECISION_RANGE[0]), *_PRECISION_RANGE)
        new_beta = np.clip((n - gamma) / np.maximum(res2, _PRECISION_RANGE[0]), *_PRECISION_RANGE)
        done = (np.abs(new_alpha - alpha) <= tol * alpha) & (np.abs(new_beta - beta) <= tol * beta)
        alpha = np.where(active, new_alpha, alpha)
        beta = np.where(active, new_beta, beta)
        active &= ~done
        if not active.any():
            break
    a = alpha + beta * sc
    m2 = (beta**2 * sc * z2 / a**2).sum(axis=0)
    res2 = outside + (alpha**2 * z2 / a**2).sum(axis=0)
    log_det_a = np.log(a).sum(axis=0) + (d - len(s)) * np.log(alpha)
    evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi)
                - beta * res2 - alpha * m2 - log_det_a) / 2
    return evidence / n


def logme_evidence(features: np.ndarray, y: np.ndarray, *, tol: float = LOGME_TOL,
                   max_iter: int = LOGME_MAX_ITER) -> float:
    """Maximised log evidence per sample, L / N, of Bayesian linear regression y = w^T f + noise.

    Prior w ~ N(0, alpha^-1 I), noise precision beta; alpha and beta maximise the evidence by
    MacKay's fixed-point updates. ``y`` is one real-valued target per row of ``features`` (N, D).
    """
    f = _matrix(features, "features")
    target = _numeric(y, "y")
    if target.ndim != 1 or target.shape[0] != f.shape[0]:
        raise Task2VecError(f"y must be a 1-D array with one value per row of features ({f.shape[0]}), "
                            f"got shape {target.shape}")
    s, z2, outside = _spectrum(f, target[:, None])
    return float(_max_evidence(s, z2, outside, *f.shape, tol, max_iter)[0])


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: mean over classes of the maximised per-sample log evidence of the class's one-hot column.

    ``features`` (N, D) as the model produces them (usually raw penultimate activations; nothing is
    normalised here), ``labels`` (N,) integers >= 0. Higher is better.
    """
    f = _matrix(features, "features")
    y, k = _targets(labels, f, "features")
    s, z2, outside = _spectrum(f, np.eye(k)[y])
    return float(_max_evidence(s, z2, outside, *f.shape, LOGME_TOL, LOGME_MAX_ITER).mean())


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log-likelihood of the target labels under the source model's probabilities theta (N, Z)
    pushed through the empirical conditional P(y | z) = P(y, z) / P(z). At most 0; higher is better."""
    theta = _probs(source_probs, "source_probs")
    y, k = _targets(labels, theta, "source_probs")
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= theta.shape[0]
    conditional = joint / np.maximum(joint.sum(axis=0), _EPS)
    eep = (conditional[y] * theta).sum(axis=1)
    return float(np.log(np.maximum(eep, _EPS)).mean())


def nce(source_labels_or_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) of the target labels Y given the source model's hard predictions Z, from their
    empirical joint distribution. Z is given as integer source labels (N,) or as probabilities (N, Z)
    whose argmax is taken. At most 0; higher is better."""
    z = np.asarray(source_labels_or_probs)
    if z.ndim == 2:
        z, name = _probs(z, "source_probs").argmax(axis=1), "source_probs"
    else:
        z, name = _int_vector(z, "source_labels"), "source_labels"
    y, k = _targets(labels, z, name)
    joint = np.zeros((k, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0 / len(y))
    p_z = np.broadcast_to(joint.sum(axis=0), joint.shape)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / p_z[seen])).sum())


SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "logme": logme,  # features (N, D) and target labels
    "leep": leep,  # source-class probabilities (N, Z) and target labels
    "nce": nce,  # source-class predictions (N,) or probabilities (N, Z) and target labels
}
"""Transferability scores by name; each takes (model output, target labels) and higher is better for all."""
