"""Distances between task embeddings (pure numpy, vectorised)."""

from __future__ import annotations

import numpy as np

_EPS = 1e-300


def _as_matrix(x) -> np.ndarray:
    from .embedding import Embedding

    if isinstance(x, Embedding):
        x = x.vector
    return np.atleast_2d(np.asarray(x, dtype=np.float64))


def symmetric(a, b) -> np.ndarray | float:
    """Task2Vec symmetric distance: cosine distance between a/(a+b) and b/(a+b), element-wise.

    ``a`` and ``b`` are vectors (or :class:`~task2vec.embedding.Embedding`) or stacks of
    them with the same number of rows; entries where a+b = 0 count as equal.
    """
    A, B = _as_matrix(a), _as_matrix(b)
    s = A + B
    zero = s <= _EPS
    s = np.where(zero, 1.0, s)
    an = np.where(zero, 0.5, A / s)
    bn = np.where(zero, 0.5, B / s)
    cos = (an * bn).sum(1) / np.sqrt((an * an).sum(1) * (bn * bn).sum(1))
    d = np.clip(1.0 - cos, 0.0, 2.0)
    return float(d[0]) if d.shape == (1,) else d
