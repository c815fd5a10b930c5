"""Distances between task embeddings, vectorised over many embeddings.

The symmetric Task2Vec distance is defined here once,

    d_sym(a, b) = 1 - cos(p, q),   p = a / (a + b),  q = b / (a + b)   (entry-wise),

an entry with a + b = 0 counting as equal (p = q = 1/2), the result clipped to [0, 1], and
computed by three back-ends that follow that definition step by step (tested against each other):

- :func:`symmetric`: numpy, float64, row-wise; the reference;
- :func:`symmetric_matrix`: every pair of rows; numba (fused, multi-threaded, float32 arithmetic
  with float64 sums, ~1e-7 from the reference) or numpy;
- :func:`symmetric_torch`: torch, differentiable (MODEL2VEC's fit), float64 like the reference.

Built on d_sym:

- :func:`complexity`: the distance of a task's posterior from the trivial task t0;
- :func:`asymmetric_scores`: d_asym(m -> t) = d_sym(m, t) - alpha * complexity(m) of every model for
  every task, the one place the asymmetric score is put together (the zoo's ranking, its index,
  MODEL2VEC and :func:`pairwise` use it); :func:`asymmetric` is its row-wise pair form.

Other distances: ``cosine``; ``domain`` (cosine distance between mean penultimate features, a
label-blind baseline); ``gaussian_kl`` (KL between the zero-mean Gaussian posteriors of variational
embeddings). Functions take vectors, (n, d) stacks or :class:`~task2vec.embedding.Embedding`
objects and return floats (single pairs) or arrays. :func:`pairwise` builds full matrices.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from .errors import IncompatibleEmbeddingsError, SettingError
from .validate import number

ALPHA = 0.15  # the paper's value for its ResNet-34 probe
KINDS = ("sym", "asym", "cosine", "domain", "kl")
ENGINES = ("numpy", "numba")
EQUAL_SHARE = 0.5  # p = q of an entry where a + b = 0: both tasks hold it equally (nothing)
BLOCK = 2**18  # elements per block of the numpy d_sym (cache-sized; bounds its memory)


def _rows(x, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (vector, stack or Embedding(s)) as a 2-D array of ``dtype`` (None: keep a float dtype, no copy)."""
    from .embedding import Embedding

    if isinstance(x, Embedding):
        x = x.vector
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Embedding):
        x = np.stack([e.vector for e in x])
    x = np.atleast_2d(np.asarray(x, dtype=dtype))
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _scalar(d: np.ndarray):
    return float(d[0]) if d.shape == (1,) else d


def symmetric(a, b) -> np.ndarray | float:
    """Row-wise d_sym between ``a`` and ``b`` (same number of rows, or one of them a single row), float64.

    Computed in blocks of rows in reused work arrays (memory bounded and no allocation per block,
    for any number of rows), with plain row reductions (no BLAS): each row's value is the same
    bits whatever rows it is computed with, so results are reproducible across chunkings and
    candidate sets.
    """
    A, B = _rows(a, None), _rows(b, None)
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
    return _scalar(np.clip(out, 0.0, 1.0))


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


def cosine(a, b) -> np.ndarray | float:
    A, B = np.broadcast_arrays(_rows(a), _rows(b))
    denom = np.sqrt((A * A).sum(1) * (B * B).sum(1))
    cos = np.where(denom > 0, (A * B).sum(1) / np.where(denom > 0, denom, 1.0), 1.0)
    return _scalar(np.clip(1.0 - cos, 0.0, 2.0))


def complexity(a, t0, *, prior_included: bool | None = None):
    """Distance of a task from the trivial task t0 (:mod:`task2vec.trivial`): the paper's task complexity.

    A Fisher embedding holds only what the task adds to the prior t0, so the task's posterior is
    a + t0 and its complexity d_sym(a + t0, t0). A variational embedding already is a posterior:
    d_sym(a, t0). ``prior_included`` defaults to whether ``t0`` is a variational embedding (False
    for plain arrays). Torch tensors give a differentiable tensor (:func:`symmetric_torch`).
    """
    if prior_included is None:
        prior_included = getattr(t0, "method", None) == "variational"
    if _is_tensor(a):
        return symmetric_torch(a if prior_included else a + t0, t0)
    A, T = _rows(a, None), _rows(t0)
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
        Am = _rows(A, None)
        Bm = Am if same else _rows(B, None)
    else:
        Am = np.ascontiguousarray(_rows(A), dtype=np.float32)
        Bm = Am if same else np.ascontiguousarray(_rows(B), dtype=np.float32)
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
        if kind == "asym" and t0 is None:
            raise IncompatibleEmbeddingsError("the asymmetric distance needs the trivial task t0")
        D = symmetric_matrix(rows, None if others is None else cols)
        return D if kind == "sym" else np.ascontiguousarray(asymmetric_scores(rows, cols, t0, alpha, sym=D.T).T)
    if kind == "domain":  # needs the Embedding objects (their domain_mean), not vectors
        return np.stack([np.atleast_1d(domain([r] * len(cols), cols)) for r in rows])
    fn, C = {"cosine": cosine, "kl": gaussian_kl}[kind], _rows(cols)
    return np.stack([np.atleast_1d(fn(r, C)) for r in rows])
