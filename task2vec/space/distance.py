"""Distances between task embeddings, vectorised over many embeddings.

The symmetric Task2Vec distance d_sym and its three back-ends (:func:`symmetric`,
:func:`symmetric_matrix`, :func:`symmetric_torch`) are defined once, in :mod:`task2vec.embedding.dsym`
(the embedding stage, whose half-split noise is a d_sym); this module is the task space built on it:

- :func:`complexity`: the distance of a task's posterior from the trivial task t0;
- :func:`asymmetric_scores`: d_asym(m -> t) = d_sym(m, t) - alpha * complexity(m) of every model for
  every task, the one place the asymmetric score is put together (the zoo's ranking, its index,
  MODEL2VEC and :func:`pairwise` use it); :func:`asymmetric` is its row-wise pair form.

Other distances: ``cosine``; ``domain`` (cosine distance between mean penultimate features, a
label-blind baseline); ``gaussian_kl`` (KL between the zero-mean Gaussian posteriors of variational
embeddings). Functions take vectors, (n, d) stacks or :class:`~task2vec.embedding.embedding.Embedding`
objects and return floats (single pairs) or arrays. :func:`pairwise` builds full matrices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..embedding.dsym import as_rows, is_tensor, scalar, symmetric, symmetric_matrix, symmetric_torch
from ..errors import IncompatibleEmbeddingsError
from ..validate import number

ALPHA = 0.15  # the paper's value for its ResNet-34 probe
KINDS = ("sym", "asym", "cosine", "domain", "kl")


def cosine(a, b) -> np.ndarray | float:
    A, B = np.broadcast_arrays(as_rows(a), as_rows(b))
    denom = np.sqrt((A * A).sum(1) * (B * B).sum(1))
    cos = np.where(denom > 0, (A * B).sum(1) / np.where(denom > 0, denom, 1.0), 1.0)
    return scalar(np.clip(1.0 - cos, 0.0, 2.0))


def complexity(a, t0, *, prior_included: bool | None = None):
    """Distance of a task from the trivial task t0 (:mod:`task2vec.space.trivial`): the paper's task complexity.

    A Fisher embedding holds only what the task adds to the prior t0, so the task's posterior is
    a + t0 and its complexity d_sym(a + t0, t0). A variational embedding already is a posterior:
    d_sym(a, t0). ``prior_included`` defaults to whether ``t0`` is a variational embedding (False
    for plain arrays). Torch tensors give a differentiable tensor (:func:`symmetric_torch`).
    """
    if prior_included is None:
        prior_included = getattr(t0, "method", None) == "variational"
    if is_tensor(a):
        return symmetric_torch(a if prior_included else a + t0, t0)
    A, T = as_rows(a, None), as_rows(t0)
    return symmetric(A if prior_included else A + T, T)


def asymmetric_scores(models, tasks, t0, alpha: float = ALPHA, *, engine: str = "numpy",
                      model_complexity=None, sym=None):
    """(T, M) matrix of d_asym(model_m -> task_t) = d_sym(m, t) - alpha * complexity(m, t0), lower is better.

    How well a model trained on a source with embedding m transfers to a target t: subtracting the
    source's distance from the trivial task favours complex sources. ``engine``: how d_sym is
    computed (:func:`symmetric_matrix`; ``"numpy"``, the float64 reference, by default).
    ``model_complexity`` (M,) and ``sym`` (T, M): either term when already known (an index keeps
    each model's complexity; its calibration needs d_sym itself), numpy arrays or torch tensors.
    """
    c = complexity(models, t0) if model_complexity is None else model_complexity
    if sym is None:
        sym = symmetric_matrix(models, tasks, engine=engine).T
    return sym - alpha * c


def asymmetric(a, b, t0, alpha: float = ALPHA) -> np.ndarray | float:
    """Row-wise d_asym(a -> b) = d_sym(a, b) - alpha * complexity(a, t0) (:func:`asymmetric_scores`
    of each row pair): how well a model trained on source ``a`` transfers to target ``b``.

    Choose alpha by validating source selection on tasks with known transfer results
    (the paper uses 0.15 for ResNet-34); alpha = 0 gives the symmetric distance.
    """
    return asymmetric_scores(a, b, t0, alpha, sym=symmetric(a, b))


def domain(a, b) -> np.ndarray | float:
    """Cosine distance between the domain embeddings (mean probe features) of two tasks."""
    from ..embedding.embedding import Embedding

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
    A, B = np.broadcast_arrays(as_rows(a), as_rows(b))
    r = B / A  # sigma_a^2 / sigma_b^2
    kl_ab = 0.5 * (r - 1 - np.log(r)).mean(1)
    if not symmetrise:
        return scalar(kl_ab)
    kl_ba = 0.5 * (1 / r - 1 + np.log(r)).mean(1)
    return scalar(0.5 * (kl_ab + kl_ba))


def pairwise(embeddings: Sequence, kind: str = "sym", *, others: Sequence | None = None, t0=None,
             alpha: float = ALPHA) -> np.ndarray:
    """Matrix of distances from each of ``embeddings`` (rows) to each of ``others`` (default: the same).

    ``kind`` is one of sym, asym (row -> column, needs ``t0``), cosine, domain, kl. Mixing
    probes or methods raises :class:`IncompatibleEmbeddingsError`.
    """
    from ..embedding.embedding import check_compatible

    if kind not in KINDS:
        raise IncompatibleEmbeddingsError(f"unknown distance kind {kind!r} (one of {', '.join(KINDS)})")
    alpha = number(alpha, "alpha", low=0)
    rows = list(embeddings)
    cols = rows if others is None else list(others)
    check_compatible(*rows, *cols)
    if kind == "kl" and any(e.method != "variational" for e in rows + cols):
        raise IncompatibleEmbeddingsError("the kl distance needs variational embeddings")
    if kind in ("sym", "asym"):
        if kind == "asym" and t0 is None:
            raise IncompatibleEmbeddingsError("the asymmetric distance needs the trivial task t0")
        D = symmetric_matrix(rows, None if others is None else cols)
        return D if kind == "sym" else np.ascontiguousarray(asymmetric_scores(rows, cols, t0, alpha, sym=D.T).T)
    if kind == "domain":  # needs the Embedding objects (their domain_mean), not vectors
        return np.stack([np.atleast_1d(domain([r] * len(cols), cols)) for r in rows])
    fn, C = {"cosine": cosine, "kl": gaussian_kl}[kind], as_rows(cols)
    return np.stack([np.atleast_1d(fn(r, C)) for r in rows])
