"""The symmetric Task2Vec distance, defined once:

    d_sym(a, b) = 1 - cos(p, q),   p = a / (a + b),  q = b / (a + b)   (entry-wise),

an entry with a + b = 0 counting as equal (p = q = 1/2), the result clipped to [0, 1], and
computed by three back-ends that follow that definition step by step (tested against each other):

- :func:`symmetric`: numpy, float64, row-wise; the reference;
- :func:`symmetric_matrix`: every pair of rows; numba (fused, multi-threaded, float32 arithmetic
  with float64 sums, ~1e-7 from the reference) or numpy;
- :func:`symmetric_torch`: torch, differentiable (MODEL2VEC's fit), float64 like the reference.

It lives in the embedding stage because an embedding measures its own noise with it (the d_sym
of its two halves); the task space (:mod:`task2vec.space.distance`) builds every other distance on it.
Functions take vectors, (n, d) stacks or :class:`~task2vec.embedding.embedding.Embedding` objects.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import IncompatibleEmbeddingsError, SettingError

ENGINES = ("numpy", "numba")
EQUAL_SHARE = 0.5  # p = q of an entry where a + b = 0: both tasks hold it equally (nothing)
BLOCK = 2**18  # elements per block of the numpy d_sym (cache-sized; bounds its memory)


def as_rows(x, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (vector, stack or Embedding(s)) as a 2-D array of ``dtype`` (None: keep a float dtype, no copy)."""
    from .embedding import Embedding

    if isinstance(x, Embedding):
        x = x.vector
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Embedding):
        x = np.stack([e.vector for e in x])
    x = np.atleast_2d(np.asarray(x, dtype=dtype))
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def scalar(d: np.ndarray):
    """A one-element result as a float, else the array."""
    return float(d[0]) if d.shape == (1,) else d


def symmetric(a, b) -> np.ndarray | float:
    """Row-wise d_sym between ``a`` and ``b`` (same number of rows, or one of them a single row), float64.

    Computed in blocks of rows in reused work arrays (memory bounded and no allocation per block,
    for any number of rows), with plain row reductions (no BLAS): each row's value is the same
    bits whatever rows it is computed with, so results are reproducible across chunkings and
    candidate sets.
    """
    A, B = as_rows(a, None), as_rows(b, None)
    n, d = np.broadcast_shapes(A.shape, B.shape)
    out = np.empty(n)
    step = max(1, min(n, BLOCK // max(d, 1)))
    work = np.empty((3, step, d))
    zero = np.empty((step, d), dtype=bool)
    x64 = None if A.dtype == np.float64 else np.empty((min(step, len(A)), d))
    y64 = None if B.dtype == np.float64 else np.empty((min(step, len(B)), d))
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        k = rows.stop - rows.start
        x = _float64(A if len(A) == 1 else A[rows], x64)
        y = _float64(B if len(B) == 1 else B[rows], y64)
        out[rows] = _symmetric_block(x, y, *work[:, :k], zero[:k])
    return scalar(np.clip(out, 0.0, 1.0))


def _float64(x: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    """``x`` as float64: itself, or copied into the start of ``buf``."""
    if buf is None:
        return x
    buf[:len(x)] = x
    return buf[:len(x)]


def _symmetric_block(x: np.ndarray, y: np.ndarray, s: np.ndarray, p: np.ndarray, t: np.ndarray,
                     zero: np.ndarray) -> np.ndarray:
    """1 - cos(p, q) of each row pair of float64 ``x``, ``y`` (not clipped), in the work arrays ``s``, ``p``,
    ``t`` and ``zero`` (rows x filters)."""
    np.add(x, y, out=s)
    np.less_equal(s, 0, out=zero)
    equal = zero.any()
    if equal:
        s[zero] = 1.0
    np.divide(x, s, out=p)
    q = np.divide(y, s, out=s)
    if equal:
        p[zero] = q[zero] = EQUAL_SHARE
    num = np.multiply(p, q, out=t).sum(1)
    pp = np.multiply(p, p, out=t).sum(1)
    qq = np.multiply(q, q, out=t).sum(1)
    return 1.0 - num / np.sqrt(pp * qq)


def symmetric_torch(a, b):
    """Row-wise d_sym of torch tensors, differentiable, broadcasting over rows (MODEL2VEC's fit).

    The definition of :func:`symmetric` step by step: float64 tensors match it to ~1e-15.
    """
    import torch

    a, b = torch.broadcast_tensors(torch.atleast_2d(a), torch.atleast_2d(b))
    s = a + b
    zero = s <= 0
    s = torch.where(zero, torch.ones_like(s), s)
    p = torch.where(zero, torch.full_like(s, EQUAL_SHARE), a / s)
    q = torch.where(zero, torch.full_like(s, EQUAL_SHARE), b / s)
    cos = (p * q).sum(-1) / torch.sqrt((p * p).sum(-1) * (q * q).sum(-1))
    return torch.clamp(1.0 - cos, 0.0, 1.0)


def _sym_matrix_kernel():
    import numba

    half = np.float32(EQUAL_SHARE)

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def kernel(A, B, out, same):
        n, d = A.shape
        m = B.shape[0]
        for i in numba.prange(n):
            for j in range(i if same else 0, m):
                num = 0.0
                pp = 0.0
                qq = 0.0
                for k in range(d):
                    a = A[i, k]
                    b = B[j, k]
                    s = a + b
                    if s <= 0:
                        p = half
                        q = half
                    else:
                        p = a / s
                        q = b / s
                    num += p * q
                    pp += p * p
                    qq += q * q
                v = 1.0 - num / np.sqrt(pp * qq)
                v = min(max(v, 0.0), 1.0)
                out[i, j] = v
                if same:
                    out[j, i] = v
    return kernel


_KERNEL = None


def symmetric_matrix(A, B=None, *, engine: str = "numba") -> np.ndarray:
    """Full d_sym matrix (len(A), len(B)) between the rows of A and of B (default: B = A).

    ``engine="numba"``: a fused, multi-threaded loop in float32 arithmetic with float64 sums, each
    pair of A with itself computed once (2,000 embeddings of MobileNetV2's 17k filters take
    seconds); ``"numpy"``: :func:`symmetric` column by column (float64, the reference).
    """
    global _KERNEL
    if engine not in ENGINES:
        raise SettingError(f"unknown d_sym engine {engine!r} (one of {', '.join(ENGINES)})")
    same = B is None
    if engine == "numpy":
        Am = as_rows(A, None)
        Bm = Am if same else as_rows(B, None)
    else:
        Am = np.ascontiguousarray(as_rows(A), dtype=np.float32)
        Bm = Am if same else np.ascontiguousarray(as_rows(B), dtype=np.float32)
    if Am.shape[1] != Bm.shape[1]:
        raise IncompatibleEmbeddingsError(f"embedding sizes differ: {Am.shape[1]} vs {Bm.shape[1]}")
    if engine == "numpy":
        out = np.empty((len(Am), len(Bm)))
        for j, b in enumerate(Bm):
            out[:, j] = symmetric(Am, b)
        return out
    if _KERNEL is None:
        _KERNEL = _sym_matrix_kernel()
    out = np.zeros((len(Am), len(Bm)), dtype=np.float64)
    _KERNEL(Am, Bm, out, same)
    return out
