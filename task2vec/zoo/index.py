"""Nearest-model search in a large zoo under the asymmetric Task2Vec distance.

For a target task q, model i of the zoo scores

    d_asym(m_i -> q) = d_sym(m_i, q) - alpha * d_sym(m_i + t0, t0)        (lower is better)

(:func:`task2vec.space.distance.asymmetric_scores`; the second term is the model's complexity,
:func:`task2vec.space.distance.complexity`).

d_sym is not an inner product, so FAISS only *proposes candidates* with a decomposable
surrogate and every candidate is then scored exactly.

The surrogate. Write r_j = log a_j - log b_j. With p_j = a_j / (a_j + b_j) = sigmoid(r_j),
d_sym(a, b) = 1 - cos(p, 1 - p), and to second order in the spread of r,
d_sym(a, b) ~ Var_j(r_j) / 2. So with

    x(a)_j = (log(a_j + f_j(a)) - mean_j' log(a_j' + f_j'(a))) / sqrt(2 D)

||x(a) - x(b)||^2 ~ d_sym(a, b): exact in the limit of small spread with no floor f. d_sym
saturates (an entry's contribution is bounded, a zero against a non-zero counts like any large
ratio) where the log does not, so each entry gets a floor f_j(a) = eps_rel * mean(a) * t_j,
relative to the row's own scale (d_sym ignores scale) and to filter j's typical share t_j of a
row (the mean of a_ij / mean(a_i) over sampled zoo rows): exact zeros stay finite and tiny
entries cannot dominate.

Two corrections, fitted at fit time. (1) Scale: d_sym is scale-invariant to second order, but
a zero entry counts more as the two tasks' overall scales differ, while centred logs ignore
scale; so the surrogate adds lambda (l(q) - l(m))^2, l(a) = mean_j log(a_j + f_j(a)), which is
one more coordinate, sqrt(lambda) l. (2) The complexity term: with G = ||x(q) - x(m)||^2 and
d_sym ~ a_q + s G near a query, d_asym ranks like G - w c with w = alpha / s. s is fitted by
least squares; lambda and w (around alpha / s) are chosen on a small grid to maximise, over
sampled zoo rows used as pseudo-queries against the sampled rows, the share of the exact top-10
found among the 10 best surrogate scores. (On the synthetic zoo of benchmarks/bench_index.py
at 100k entries, the 20 best surrogate scores held 36% of the true top-10 with lambda = 0 and
95% with lambda = 0.0115; on the 256-filter zoo of tests/test_index.py any lambda > 0 lowered
that share and the grid keeps lambda = 0.) The surrogate score

    G_i + lambda (l(q) - l(m_i))^2 - w c_i,     c_i = d_sym(m_i + t0, t0) (exact, fitted)

is a nearest-neighbour problem on u(a) = [x(a), sqrt(lambda) l(a)]:

- ``kind="flat"``: maximum inner product of q' = [u(q), 1] with m' = [2 u(m), -||u(m)||^2 + w c]
  (faiss ``IndexFlatIP``, exact for the surrogate);
- ``kind="ivfpq"``: x is reduced by PCA to y (``pca_dim - 2`` components, trained on a sample)
  and the index stores [y(m), sqrt(lambda) l(m), z] with z^2 = (squared PCA residual of x(m))
  - w c + max(w, 0), queried with [y(q), sqrt(lambda) l(q), 0]: the squared L2 distance is the
  surrogate (+ a constant) with the model's PCA residual counted as if orthogonal to the
  query's (faiss ``IndexIVFPQ``, approximate).

Candidates are then re-ranked with the exact d_asym (:func:`task2vec.space.distance.symmetric`, numpy,
float64; each row's score the same bits whatever rows it is scored with), and the returned scores
are always exact. Ties are broken by index.

Guarantee: whenever every entry is re-ranked (``rerank >= N``; the flat default up to 20,000
entries) the result is the brute-force top-k. Otherwise a true top-k entry is missed exactly
when the surrogate (or the IVF-PQ approximation of it) does not place it among the ``rerank``
candidates: recall is measured, not guaranteed (see benchmarks/README.md).
"""

from __future__ import annotations

import math

import numpy as np

from ..space.distance import ALPHA, asymmetric_scores, complexity, symmetric_matrix
from ..errors import SearchIndexError
from ..validate import embedding_array, embedding_values, integer, number

KINDS = ("flat", "ivfpq")
DEVICES = ("auto", "cpu", "cuda")
FLAT_EXACT_MAX = 20_000  # flat default: re-rank every entry up to this many
IVFPQ_RERANK = 200  # ivfpq default number of exactly re-ranked candidates
PCA_SAMPLE = 4096  # rows the PCA and the floor's filter shares are fitted on
CALIB_QUERIES = 64  # sampled rows used as pseudo-queries to calibrate the surrogate
CALIB_NEIGHBOURS = 100  # their surrogate-nearest sampled rows fit the slope s
CALIB_MIN = 20  # fewer sampled rows: no calibration (s = 1, lambda = 0, w = alpha)
CALIB_K = 10
CALIB_LEVEL_GRID = (0.0, 0.00125, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04)
CALIB_COMPLEXITY_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)  # times alpha / s
GPU_MAX_K = 2048  # faiss GPU limit on k and nprobe
_CHUNK = 2**23  # elements per chunk fetched from the zoo when streaming


# --------------------------------------------------------------------------- exact scoring

def _merge_topk(best_s, best_i, s, i, k):
    """Merge running top-k (score, index) with new candidates; ties broken by index."""
    S = np.concatenate([best_s, s])
    Ix = np.concatenate([best_i, i])
    if len(S) > k:
        kth = np.partition(S, k - 1)[k - 1]
        keep = S <= kth
        S, Ix = S[keep], Ix[keep]
    o = np.lexsort((Ix, S))[:k]
    return S[o], Ix[o]


# --------------------------------------------------------------------------- validation

def _check_vector(v, name: str, dim: int | None = None) -> np.ndarray:
    v = embedding_array(v, name, ndim=1, error=SearchIndexError)
    if dim is not None and v.size != dim:
        raise SearchIndexError(f"{name} has {v.size} entries, expected {dim}")
    return v


def _check_queries(queries, dim: int) -> np.ndarray:
    Q = np.atleast_2d(embedding_array(queries, "queries", ndim=(1, 2), error=SearchIndexError))
    if Q.shape[1] != dim:
        raise SearchIndexError(f"queries have {Q.shape[1]} entries, the zoo has {dim}")
    return Q


def _positive_int(value, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return integer(value, name, low=1, error=SearchIndexError)


def _zoo_shape(vectors) -> tuple[int, int]:
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2:
            raise SearchIndexError(f"vectors must be a 2-D (N, D) array, got shape {vectors.shape}")
        n, d = vectors.shape
    else:
        try:
            n = len(vectors)
        except TypeError as exc:
            raise SearchIndexError(f"vectors must support len() and row indexing, got {type(vectors).__name__}") \
                from exc
        d = _fetch(vectors, np.arange(min(n, 1))).shape[1] if n else 0
    if n == 0 or d == 0:
        raise SearchIndexError(f"the zoo is empty (shape ({n}, {d}))")
    return int(n), int(d)


def _fetch(vectors, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (sorted int64) of the zoo as an (len(idx), D) array."""
    if isinstance(vectors, np.ndarray) and len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        rows = vectors[int(idx[0]):int(idx[-1]) + 1]  # a contiguous run: slice, no copy
    else:
        try:
            rows = np.asarray(vectors[idx])
        except (TypeError, IndexError, ValueError) as exc:
            raise SearchIndexError(f"vectors[idx] failed for a {type(vectors).__name__} "
                                   f"({type(exc).__name__}: {exc})") from exc
    if rows.ndim != 2 or rows.shape[0] != len(idx):
        raise SearchIndexError(f"vectors[idx] returned shape {rows.shape} for {len(idx)} indices")
    if not np.issubdtype(rows.dtype, np.floating):
        rows = rows.astype(np.float64)
    return rows


def _chunks(n: int, d: int):
    step = max(1, _CHUNK // d)
    for a in range(0, n, step):
        yield np.arange(a, min(n, a + step), dtype=np.int64)


def _stream(vectors, n: int, d: int, name: str = "vectors"):
    """Validated chunks (idx, rows) over the whole zoo."""
    for idx in _chunks(n, d):
        rows = _fetch(vectors, idx)
        if rows.shape[1] != d:
            raise SearchIndexError(f"rows of {name} have {rows.shape[1]} entries, expected {d}")
        embedding_values(rows, name, error=SearchIndexError, first_row=int(idx[0]))
        yield idx, rows


# --------------------------------------------------------------------------- brute force

def brute_force(vectors, queries, t0, alpha: float = ALPHA, k: int = 5, *,
                engine: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of d_asym(m_i -> q) over the whole zoo, streamed in chunks.

    Returns (scores (Q, k) float64, indices (Q, k) int64), ascending, ties broken by index.
    ``engine="numpy"``: the float64 scoring the index re-ranks with (bit-identical results).
    ``engine="numba"``: d_sym by the numba :func:`task2vec.space.distance.symmetric_matrix` (float32
    arithmetic, float64 sums, multi-threaded; about 10x faster for many queries, scores agree to ~1e-6).
    """
    if engine not in ("numpy", "numba"):
        raise SearchIndexError(f"unknown engine {engine!r} (numpy or numba)")
    alpha = number(alpha, "alpha", low=0, error=SearchIndexError)
    n, d = _zoo_shape(vectors)
    t0 = _check_vector(t0, "t0", d)
    Q = _check_queries(queries, d)
    k = min(_positive_int(k, "k"), n)
    best = [(np.empty(0), np.empty(0, np.int64)) for _ in Q]
    for idx, rows in _stream(vectors, n, d):
        scores = asymmetric_scores(rows, Q, t0, alpha, engine=engine)
        for j in range(len(Q)):
            best[j] = _merge_topk(*best[j], scores[j], idx, k)
    return np.stack([b[0] for b in best]), np.stack([b[1] for b in best])


# --------------------------------------------------------------------------- the index

class AsymmetricIndex:
    """Top-k zoo models for target tasks under d_asym(m -> q) = d_sym(m, q) - alpha d_sym(m + t0, t0).

    Parameters
    ----------
    t0: the trivial-task vector (D,).
    alpha: weight of the model-complexity term (>= 0).
    kind: ``"flat"`` (exact surrogate search; exact results while every entry is re-ranked) or
        ``"ivfpq"`` (PCA + IVF-PQ surrogate search, for zoos of ~1M entries and more).
    rerank: candidates re-ranked exactly per query. Default: flat, every entry up to 20,000
        entries, else max(1000, N // 50); ivfpq, 200. Read at search time (can be changed after fit;
        :attr:`candidates` says what it comes to).
    pca_dim: dimension of the IVF-PQ vectors (``pca_dim - 2`` PCA components, the scale
        coordinate and the complexity coordinate); a multiple of ``pq_m``.
    nlist: IVF lists (default ~4 sqrt(N), at most N / 39); pq_m: PQ bytes per vector;
    nprobe: lists visited per query (read at search time; 64 of the default 4,000 lists at 1M
        entries gave recall@10 0.975 where 16 gave 0.865, see benchmarks/README.md).
    device: ``"auto"`` (faiss GPU index when faiss has GPU support and CUDA is available, else
        CPU), ``"cpu"`` or ``"cuda"``. Exact re-ranking always runs on the CPU.
    eps_rel: the surrogate's floor, relative to each row's mean and each filter's typical share
        (0.1 ranked best on the real and synthetic zoos measured; see benchmarks/README.md).
    seed: sampling for PCA / training / calibration.

    Learned attributes: ``n_``, ``dim_``, ``complexity_`` (N,) = d_sym(m_i + t0, t0),
    ``filter_scale_`` (D,) (t_j of the floor), ``scale_`` (s), ``level_weight_`` (lambda),
    ``complexity_weight_`` (w), ``calibration_recall_`` (calibrated when a faiss index is built,
    else on the first :meth:`surrogate_scores` call; until then 1, 0, alpha, None), ``index_``
    (the faiss index; None for a flat index that re-ranks every entry), ``vectors_`` (the zoo,
    kept by reference for re-ranking: keep it alive and unchanged), ``device_``, ``nlist_`` and
    ``pca_mean_``/``pca_components_`` (ivfpq).
    """

    def __init__(self, t0, alpha: float = ALPHA, *, kind: str = "flat", rerank: int | None = None,
                 pca_dim: int = 64, nlist: int | None = None, pq_m: int = 16, nprobe: int = 64,
                 device: str = "auto", eps_rel: float = 0.1, seed: int = 0):
        self.t0 = _check_vector(t0, "t0")
        self.alpha = number(alpha, "alpha", low=0, error=SearchIndexError)
        if kind not in KINDS:
            raise SearchIndexError(f"unknown index kind {kind!r} (one of {', '.join(KINDS)})")
        if device not in DEVICES:
            raise SearchIndexError(f"unknown device {device!r} (one of {', '.join(DEVICES)})")
        self.kind, self.device, self.seed = kind, device, int(seed)
        self.rerank = _positive_int(rerank, "rerank", allow_none=True)
        self.pca_dim = _positive_int(pca_dim, "pca_dim")
        self.nlist = _positive_int(nlist, "nlist", allow_none=True)
        self.pq_m = _positive_int(pq_m, "pq_m")
        self.nprobe = _positive_int(nprobe, "nprobe")
        if kind == "ivfpq" and (self.pca_dim < 3 or self.pca_dim % self.pq_m):
            raise SearchIndexError(f"pca_dim {pca_dim} must be >= 3 and a multiple of pq_m {pq_m}")
        self.eps_rel = number(eps_rel, "eps_rel", low=0, low_open=True, error=SearchIndexError)

    # ----------------------------------------------------------------- fitting
    def fit(self, vectors) -> "AsymmetricIndex":
        """Index the zoo ``vectors`` (N, D): an ndarray, memmap or any object with ``len()`` and
        ``vectors[idx_array] -> (len(idx), D)``. Read in chunks, kept by reference, never copied."""
        n, d = _zoo_shape(vectors)
        if d != self.t0.size:
            raise SearchIndexError(f"vectors have {d} entries per row, t0 has {self.t0.size}")
        if self.kind == "ivfpq" and n < 256:
            raise SearchIndexError(f"an ivfpq index needs at least 256 entries, got {n} (use kind='flat')")
        self.device_ = self._resolve_device()
        rng = np.random.default_rng(self.seed)
        sample_idx = np.sort(rng.choice(n, size=min(n, PCA_SAMPLE), replace=False))
        sample = _fetch(vectors, sample_idx)
        if sample.shape[1] != d:
            raise SearchIndexError(f"rows of vectors have {sample.shape[1]} entries, expected {d}")
        embedding_values(sample, "vectors (sampled rows)", error=SearchIndexError)
        self.n_, self.dim_ = n, d
        share = (sample / sample.mean(1, keepdims=True)).mean(0)  # mean of each filter's share
        self.filter_scale_ = np.maximum(share, 1e-6).astype(np.float32)
        X_sample, level = self.surrogate_coordinates(sample)
        self.level_mean_ = float(level.mean())
        self.scale_, self.level_weight_ = 1.0, 0.0
        self.complexity_weight_, self.calibration_recall_ = self.alpha, None
        self.vectors_ = vectors
        self.index_ = None
        self._uncalibrated = sample_idx
        if self.kind == "flat":
            self._fit_flat(vectors, n, d, sample, X_sample, level)
        else:
            self._fit_ivfpq(vectors, n, d, sample, X_sample, level, rng)
        return self

    def _ensure_calibrated(self, sample=None, X=None, level=None) -> None:
        """Calibrate the surrogate, once: at fit when a faiss index is built, else on first use of
        :meth:`surrogate_scores` (an exhaustive flat index never uses the surrogate)."""
        if self._uncalibrated is None:
            return
        if sample is None:
            sample = _fetch(self.vectors_, self._uncalibrated)
            X, level = self.surrogate_coordinates(sample)
        self._calibrate(sample, X, level - self.level_mean_, np.random.default_rng(self.seed + 1))
        self._uncalibrated = None

    def _resolve_device(self) -> str:
        import faiss

        gpu_faiss = hasattr(faiss, "StandardGpuResources")
        if self.device == "cpu" or (self.device == "auto" and not gpu_faiss):
            return "cpu"
        import torch

        cuda = gpu_faiss and torch.cuda.is_available()
        if self.device == "cuda" and not cuda:
            raise SearchIndexError("device 'cuda' requested but faiss has no GPU support or CUDA is unavailable")
        return "cuda" if cuda else "cpu"

    def surrogate_coordinates(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The surrogate's coordinates of ``rows`` (n, D), after :meth:`fit`: x(a) = centred
        log(a_j + eps_rel mean(a) t_j) / sqrt(2 D) (float32), whose squared distances track d_sym,
        and the mean log l(a) (float64)."""
        A = np.asarray(rows, dtype=np.float32)
        L = A.mean(1, keepdims=True) * (np.float32(self.eps_rel) * self.filter_scale_)
        L += A
        np.log(L, out=L)
        level = L.mean(1, keepdims=True)
        L -= level
        L *= np.float32(1.0 / math.sqrt(2 * rows.shape[1]))
        return L, level[:, 0].astype(np.float64)

    def _surrogate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x(a), sqrt(lambda) (l(a) - mean l)): squared distances of [x, level] are G + lambda dl^2."""
        X, level = self.surrogate_coordinates(rows)
        return X, (math.sqrt(self.level_weight_) * (level - self.level_mean_)).astype(np.float32)

    def _calibrate(self, sample: np.ndarray, X: np.ndarray, level: np.ndarray, rng) -> None:
        """Fit the surrogate's slope s and choose its weights (lambda, w) on pseudo-queries.

        P sampled rows act as queries against the whole sample (exact d_asym for every pair).
        s: least squares d_sym ~ a_q + s G over each pseudo-query's CALIB_NEIGHBOURS surrogate-
        nearest rows. (lambda, w): the grid point whose k best candidates by G + lambda dl^2 - w c
        hold the most of the exact top-k (k = 10, fewer under 100 sampled rows); ties go to the
        smaller lambda, then to w nearest alpha / s. Sets scale_, level_weight_ (lambda),
        complexity_weight_ (w) and calibration_recall_ (that share; None when not calibrated).
        """
        n, d = sample.shape
        P = min(CALIB_QUERIES, n)
        if n < CALIB_MIN:
            return
        qi = np.sort(rng.choice(n, size=P, replace=False))
        # large: the fused multi-threaded kernel (float32 arithmetic), plenty for calibrating
        S = symmetric_matrix(sample, sample[qi], engine="numba" if P * n * d > 2e8 else "numpy").T
        G = np.einsum("ij,ij->i", X, X)[None] - 2 * (X[qi] @ X.T)
        G += np.einsum("ij,ij->i", X[qi], X[qi])[:, None]
        G[np.arange(P), qi] = np.inf
        T = min(CALIB_NEIGHBOURS, n - 1)
        near = np.argpartition(G, T - 1, axis=1)[:, :T]
        design = np.zeros((P * T, P + 1))
        design[np.arange(P * T), np.repeat(np.arange(P), T)] = 1.0
        design[:, P] = np.take_along_axis(G, near, 1).ravel()
        slope = float(np.linalg.lstsq(design, np.take_along_axis(S, near, 1).ravel(), rcond=None)[0][P])
        if math.isfinite(slope) and slope > 0:
            self.scale_ = slope
        c = complexity(sample, self.t0)
        E = asymmetric_scores(sample, sample[qi], self.t0, self.alpha, model_complexity=c, sym=S)
        E[np.arange(P), qi] = np.inf
        k = max(1, min(CALIB_K, n // 10))
        truth = np.argpartition(E, k - 1, axis=1)[:, :k]
        D2 = (level[qi][:, None] - level[None]) ** 2
        w0 = self.alpha / self.scale_
        best = None
        for lam in CALIB_LEVEL_GRID:
            for f in CALIB_COMPLEXITY_GRID:
                F = G + lam * D2 - f * w0 * c[None]
                cand = np.argpartition(F, k - 1, axis=1)[:, :k]
                hit = np.mean([np.isin(t, cc).mean() for t, cc in zip(truth, cand)])
                key = (-hit, lam, abs(f - 1.0))
                if best is None or key < best[0]:
                    best = (key, lam, f * w0)
        self.level_weight_, self.complexity_weight_ = best[1], best[2]
        self.calibration_recall_ = -best[0][0]

    def _fit_flat(self, vectors, n: int, d: int, sample, X_sample, level) -> None:
        build = self.candidates < n
        c = np.empty(n)
        if build:
            import faiss

            self._ensure_calibrated(sample, X_sample, level)

            index = faiss.IndexFlatIP(d + 2)
        w = self.complexity_weight_
        for idx, rows in _stream(vectors, n, d):
            c[idx] = complexity(rows, self.t0)
            if build:
                X, lev = self._surrogate(rows)
                aug = np.empty((len(X), d + 2), dtype=np.float32)
                aug[:, :d] = 2 * X
                aug[:, d] = 2 * lev
                aug[:, d + 1] = -np.einsum("ij,ij->i", X, X) - lev * lev + w * c[idx]
                index.add(aug)
        self.complexity_ = c
        if build:
            self.index_ = self._to_device(index)

    def _fit_ivfpq(self, vectors, n: int, d: int, sample, X_sample, level, rng) -> None:
        import faiss

        self._ensure_calibrated(sample, X_sample, level)
        ncomp = min(self.pca_dim - 2, d, len(X_sample))
        self.pca_mean_ = X_sample.mean(0)
        self.pca_components_ = _top_components(X_sample - self.pca_mean_, ncomp, self.seed)
        self.nlist_ = self.nlist or max(1, min(int(round(4 * math.sqrt(n))), n // 39))
        Y = np.zeros((n, self.pca_dim), dtype=np.float32)
        c = np.empty(n)
        w = self.complexity_weight_
        for idx, rows in _stream(vectors, n, d):
            c[idx] = complexity(rows, self.t0)
            y, r2, lev = self._project(rows)
            Y[idx, :ncomp] = y
            Y[idx, -2] = lev
            Y[idx, -1] = np.sqrt(np.maximum(r2 - w * c[idx] + max(w, 0.0), 0.0))  # c in [0, 1]
        self.complexity_ = c
        quantizer = faiss.IndexFlatL2(self.pca_dim)
        index = faiss.IndexIVFPQ(quantizer, self.pca_dim, self.nlist_, self.pq_m, 8)
        index.cp.seed = self.seed
        index.pq.cp.seed = self.seed
        index.cp.niter = 20
        index.pq.cp.niter = 10  # the 256-centroid codebooks of small sub-spaces dominate training time
        index.pq.cp.max_points_per_centroid = 64
        n_train = min(n, max(40 * self.nlist_, 256 * 64))
        train = Y[np.sort(rng.choice(n, size=n_train, replace=False))]
        index.train(train)
        step = 2**16
        for a in range(0, n, step):
            index.add(Y[a:a + step])
        self.index_ = self._to_device(index)

    def _project(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PCA coordinates y of x(rows), the squared norm of the PCA residual, the level coordinate."""
        Xc, lev = self._surrogate(rows)
        Xc -= self.pca_mean_
        y = Xc @ self.pca_components_.T
        r2 = np.einsum("ij,ij->i", Xc, Xc) - np.einsum("ij,ij->i", y, y)
        return y, np.maximum(r2, 0.0).astype(np.float64), lev

    def _to_device(self, index):
        if self.device_ != "cuda":
            return index
        import faiss

        self._gpu_res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_res, 0, index)

    @property
    def candidates(self) -> int:
        """Entries re-ranked exactly per query, after :meth:`fit`: ``rerank``, or its default for the zoo's size."""
        n = self.n_
        if self.rerank is not None:
            return min(self.rerank, n)
        if self.kind == "ivfpq":
            return min(IVFPQ_RERANK, n)
        return n if n <= FLAT_EXACT_MAX else max(1000, n // 50)

    # ----------------------------------------------------------------- searching
    def search(self, queries, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-k models for each query: (scores (Q, k) float64 exact d_asym, indices (Q, k) int64),
        ascending, ties broken by index; ``k`` is clipped to N. A single (D,) query gives Q = 1."""
        if not hasattr(self, "n_"):
            raise SearchIndexError("search before fit: call fit(vectors) first")
        k = min(_positive_int(k, "k"), self.n_)
        Q = _check_queries(queries, self.dim_)
        if self.index_ is None:  # flat, every entry re-ranked: brute force
            return self._exhaustive(Q, k)
        n_cand = max(self.candidates, k)
        if self.device_ == "cuda" and n_cand > GPU_MAX_K:
            raise SearchIndexError(f"faiss GPU indexes return at most {GPU_MAX_K} candidates, rerank is {n_cand} "
                                   "(lower rerank or use device='cpu')")
        if self.kind == "flat":
            X, lev = self._surrogate(Q)
            qv = np.hstack([X, lev[:, None], np.ones((len(X), 1), np.float32)])
        else:
            self._set_nprobe(self.nprobe)
            qv = np.zeros((len(Q), self.pca_dim), dtype=np.float32)
            y, _, lev = self._project(Q)
            qv[:, :y.shape[1]] = y
            qv[:, -2] = lev
        _, cand = self.index_.search(np.ascontiguousarray(qv), n_cand)
        scores = np.empty((len(Q), k))
        indices = np.empty((len(Q), k), dtype=np.int64)
        for j, q in enumerate(Q):
            ids = np.unique(cand[j][cand[j] >= 0])  # sorted
            if len(ids) < k:  # IVF lists visited held too few entries: visit all
                self._set_nprobe(self.nlist_ if self.device_ != "cuda" else min(self.nlist_, GPU_MAX_K))
                _, more = self.index_.search(np.ascontiguousarray(qv[j:j + 1]), n_cand)
                self._set_nprobe(self.nprobe)
                ids = np.unique(more[0][more[0] >= 0])
            rows = _fetch(self.vectors_, ids)
            s = asymmetric_scores(rows, q, self.t0, self.alpha, model_complexity=self.complexity_[ids])[0]
            o = np.lexsort((ids, s))[:k]
            scores[j], indices[j] = s[o], ids[o]
        return scores, indices

    def _set_nprobe(self, nprobe: int) -> None:
        if self.kind != "ivfpq":
            return
        nprobe = _positive_int(nprobe, "nprobe")
        try:
            self.index_.nprobe = nprobe
        except AttributeError:  # some GPU index versions
            self.index_.setNumProbes(nprobe)

    def _exhaustive(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        best = [(np.empty(0), np.empty(0, np.int64)) for _ in Q]
        for idx in _chunks(self.n_, self.dim_):
            scores = asymmetric_scores(_fetch(self.vectors_, idx), Q, self.t0, self.alpha,
                                       model_complexity=self.complexity_[idx])
            for j in range(len(Q)):
                best[j] = _merge_topk(*best[j], scores[j], idx, k)
        return np.stack([b[0] for b in best]), np.stack([b[1] for b in best])

    def surrogate_scores(self, queries) -> np.ndarray:
        """The flat surrogate s (||x(q) - x(m_i)||^2 - w c_i) for every entry (Q, N), which tracks
        d_asym up to a constant per query: a diagnostic for small zoos (dense, full dimension)."""
        if not hasattr(self, "n_"):
            raise SearchIndexError("search before fit: call fit(vectors) first")
        Q = _check_queries(queries, self.dim_)
        self._ensure_calibrated()
        Xq = np.hstack([a.reshape(len(Q), -1) for a in self._surrogate(Q)]).astype(np.float64)
        out = np.empty((len(Q), self.n_))
        for idx in _chunks(self.n_, self.dim_):
            Xm = np.hstack([a.reshape(len(idx), -1) for a in self._surrogate(_fetch(self.vectors_, idx))])
            Xm = Xm.astype(np.float64)
            G = (Xq * Xq).sum(1)[:, None] + (Xm * Xm).sum(1)[None] - 2 * Xq @ Xm.T
            out[:, idx] = self.scale_ * (G - self.complexity_weight_ * self.complexity_[idx])
        return out


def _top_components(Xc: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Top-k right singular vectors (k, D) of the centred sample ``Xc`` (scikit-learn's randomised SVD)."""
    from sklearn.utils.extmath import randomized_svd

    n, d = Xc.shape
    if k >= min(n, d):
        _, _, Vt = np.linalg.svd(Xc.astype(np.float64), full_matrices=False)
        out = np.zeros((k, d), dtype=np.float32)
        out[:len(Vt)] = Vt[:k]
        return out
    _, _, Vt = randomized_svd(Xc, k, n_oversamples=16, n_iter=4, random_state=seed)
    return np.ascontiguousarray(Vt, dtype=np.float32)
