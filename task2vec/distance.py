"""Distances between task embeddings, vectorised over many embeddings.

- ``symmetric``: the paper's d_sym(a, b) = cosine distance between a/(a+b) and b/(a+b),
  element-wise (entries with a + b = 0 count as equal);
- ``asymmetric``: d_asym(a -> b) = d_sym(a, b) - alpha * complexity(a), the complexity being the
  distance of a's posterior from the trivial task t0 (:func:`complexity`);
- ``cosine``: plain cosine distance;
- ``domain``: cosine distance between mean penultimate features (label-blind baseline);
- ``gaussian_kl``: KL between the zero-mean Gaussian posteriors of variational embeddings.

Functions take vectors, (n, d) stacks or :class:`~task2vec.embedding.Embedding` objects and
return floats (single pairs) or arrays. :func:`pairwise` builds full matrices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import IncompatibleEmbeddingsError
from .validate import number

ALPHA = 0.15  # the paper's value for its ResNet-34 probe
KINDS = ("sym", "asym", "cosine", "domain", "kl")


def _rows(x) -> np.ndarray:
    from .embedding import Embedding

    if isinstance(x, Embedding):
        x = x.vector
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Embedding):
        x = np.stack([e.vector for e in x])
    return np.atleast_2d(np.asarray(x, dtype=np.float64))


def _scalar(d: np.ndarray):
    return float(d[0]) if d.shape == (1,) else d


def symmetric(a, b) -> np.ndarray | float:
    """Row-wise d_sym between ``a`` and ``b`` (same number of rows, or one of them a single row)."""
    A, B = np.broadcast_arrays(_rows(a), _rows(b))
    s = A + B
    zero = s <= 0
    s = np.where(zero, 1.0, s)
    an, bn = np.where(zero, 0.5, A / s), np.where(zero, 0.5, B / s)
    cos = (an * bn).sum(1) / np.sqrt((an * an).sum(1) * (bn * bn).sum(1))
    return _scalar(np.clip(1.0 - cos, 0.0, 1.0))


def cosine(a, b) -> np.ndarray | float:
    A, B = np.broadcast_arrays(_rows(a), _rows(b))
    denom = np.sqrt((A * A).sum(1) * (B * B).sum(1))
    cos = np.where(denom > 0, (A * B).sum(1) / np.where(denom > 0, denom, 1.0), 1.0)
    return _scalar(np.clip(1.0 - cos, 0.0, 2.0))


def complexity(a, t0, *, prior_included: bool | None = None) -> np.ndarray | float:
    """Distance of a task from the trivial task t0 (:mod:`task2vec.trivial`): the paper's task complexity.

    A Fisher embedding holds only what the task adds to the prior t0, so the task's posterior is
    a + t0 and its complexity d_sym(a + t0, t0). A variational embedding already is a posterior:
    d_sym(a, t0). ``prior_included`` defaults to whether ``t0`` is a variational embedding (False
    for plain arrays).
    """
    if prior_included is None:
        prior_included = getattr(t0, "method", None) == "variational"
    A, T = _rows(a), _rows(t0)
    return symmetric(A if prior_included else A + T, T)


def asymmetric(a, b, t0, alpha: float = ALPHA) -> np.ndarray | float:
    """d_asym(a -> b) = d_sym(a, b) - alpha * complexity(a, t0): how well a model trained on source
    ``a`` transfers to target ``b``; subtracting the source's distance from the trivial task
    favours complex sources.

    Choose alpha by validating source selection on tasks with known transfer results
    (the paper uses 0.15 for ResNet-34); alpha = 0 gives the symmetric distance.
    """
    return symmetric(a, b) - alpha * complexity(a, t0)


def domain(a, b) -> np.ndarray | float:
    """Cosine distance between the domain embeddings (mean probe features) of two tasks."""
    from .embedding import Embedding

    def means(x):
        xs = x if isinstance(x, (list, tuple)) else [x]
        if not all(isinstance(e, Embedding) and e.domain_mean is not None for e in xs):
            raise IncompatibleEmbeddingsError("the domain distance needs embeddings that carry domain_mean")
        return np.stack([e.domain_mean for e in xs])

    return cosine(means(a), means(b))


def gaussian_kl(a, b, symmetrise: bool = True) -> np.ndarray | float:
    """KL(N(0, diag 1/a) || N(0, diag 1/b)) per row, averaged over filters, for inverse variances a, b.

    With ``symmetrise`` the mean of both directions (Jeffreys divergence / 2).
    """
    A, B = np.broadcast_arrays(_rows(a), _rows(b))
    r = B / A  # sigma_a^2 / sigma_b^2
    kl_ab = 0.5 * (r - 1 - np.log(r)).mean(1)
    if not symmetrise:
        return _scalar(kl_ab)
    kl_ba = 0.5 * (1 / r - 1 + np.log(r)).mean(1)
    return _scalar(0.5 * (kl_ab + kl_ba))


def _sym_matrix_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def kernel(A, B, out, same):
        n, d = A.shape
        m = B.shape[0]
        for i in numba.prange(n):
            for j in range(i if same else 0, m):
                num = 0.0
                na = 0.0
                nb = 0.0
                for k in range(d):
                    a = A[i, k]
                    b = B[j, k]
                    s = a + b
                    if s > 0:
                        inv = 1.0 / (s * s)
                        num += a * b * inv
                        na += a * a * inv
                        nb += b * b * inv
                    else:
                        num += 0.25
                        na += 0.25
                        nb += 0.25
                v = 1.0 - num / np.sqrt(na * nb)
                v = min(max(v, 0.0), 1.0)
                out[i, j] = v
                if same:
                    out[j, i] = v
    return kernel


_KERNEL = None


def symmetric_matrix(A, B=None) -> np.ndarray:
    """Full d_sym matrix between the rows of A and of B (default: B = A, computed once per pair).

    A fused, multi-threaded loop (numba) in float32 arithmetic with float64 sums: 2,000
    embeddings of MobileNetV2's 17k filters take seconds.
    """
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _sym_matrix_kernel()
    Am = np.ascontiguousarray(_rows(A), dtype=np.float32)
    same = B is None
    Bm = Am if same else np.ascontiguousarray(_rows(B), dtype=np.float32)
    if Am.shape[1] != Bm.shape[1]:
        raise IncompatibleEmbeddingsError(f"embedding sizes differ: {Am.shape[1]} vs {Bm.shape[1]}")
    out = np.zeros((len(Am), len(Bm)), dtype=np.float64)
    _KERNEL(Am, Bm, out, same)
    return out


def pairwise(embeddings: Sequence, kind: str = "sym", *, others: Sequence | None = None, t0=None,
             alpha: float = ALPHA) -> np.ndarray:
    """Matrix of distances from each of ``embeddings`` (rows) to each of ``others`` (default: the same).

    ``kind`` is one of sym, asym (row -> column, needs ``t0``), cosine, domain, kl. Mixing
    probes or methods raises :class:`IncompatibleEmbeddingsError`.
    """
    from .embedding import check_compatible

    if kind not in KINDS:
        raise IncompatibleEmbeddingsError(f"unknown distance kind {kind!r} (one of {', '.join(KINDS)})")
    alpha = number(alpha, "alpha", low=0)
    rows = list(embeddings)
    cols = rows if others is None else list(others)
    check_compatible(*rows, *cols)
    if kind == "kl" and any(e.method != "variational" for e in rows + cols):
        raise IncompatibleEmbeddingsError("the kl distance needs variational embeddings")
    if kind in ("sym", "asym"):
        D = symmetric_matrix(rows, None if others is None else cols)
        if kind == "asym":
            if t0 is None:
                raise IncompatibleEmbeddingsError("the asymmetric distance needs the trivial task t0")
            D = D - alpha * np.asarray(complexity(rows, t0)).reshape(-1, 1)
        return D
    if kind == "domain":  # needs the Embedding objects (their domain_mean), not vectors
        return np.stack([np.atleast_1d(domain([r] * len(cols), cols)) for r in rows])
    fn, C = {"cosine": cosine, "kl": gaussian_kl}[kind], _rows(cols)
    return np.stack([np.atleast_1d(fn(r, C)) for r in rows])
