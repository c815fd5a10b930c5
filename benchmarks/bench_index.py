"""Nearest-model search under d_asym: IVF-PQ at 1M entries, and the flat index at 10k.

    python benchmarks/bench_index.py [--n 1000000] [--dim 17056] [--queries 20] [--basis examples/out]

A 1M x 17,056 zoo is 68 GB in float32, so the zoo is a *row generator* (len() and
rows[idx_array]) computing each row on demand, deterministically from compact per-row state:

    log row_i = sum_k w_ik L_k + sigma_i * noise_i + log scale_i,  then ~0.5% of entries set to 0

L_k: K basis log-profiles; with ``--basis DIR`` the centred logs of the real embeddings there
(``*.t2v.npz``; a fixed random subset of filters when --dim is smaller), else random
(per-filter level N(0, 2.5^2) + task direction N(0, 0.57^2): the spreads measured on the real
MobileNetV2 embeddings). w_i ~ Dirichlet(0.3) over the K bases (1M x K stored), sigma_i ~
U(0.08, 0.25) and scale_i ~ logN(0, 0.5). noise_i is a window, at a per-row offset, of one
fixed 4M-value Gaussian sequence (full rank, cheap). Queries are further rows of the same
generator (indices >= n, not in the zoo). t0: ``--t0 FILE``, the trivial task of the first real embedding, or a synthetic prior.

Reports: fit time, index memory, time of the exact streaming ground truth, recall@k against
it for a few (nprobe, rerank), per-query latency (one query at a time after warm-up; the time
spent generating the re-ranked rows is reported apart: it stands in for reading them from
disk), the surrogate's Spearman with the exact score; then the flat index at --flat-n entries.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from task2vec.space.distance import ALPHA
from task2vec.zoo.index import AsymmetricIndex, brute_force


class SyntheticZoo:
    """Rows generated on demand: ``len(zoo)`` = n, ``zoo[idx]`` -> (len(idx), dim) float32; rows
    beyond n (up to n + extra) exist for queries."""

    def __init__(self, n: int, dim: int, basis_logs: np.ndarray, *, extra: int = 1000, seed: int = 0,
                 dead: np.ndarray | None = None):
        rng = np.random.default_rng(seed)
        total = n + extra
        self.n, self.dim = n, dim
        self.L = np.ascontiguousarray(basis_logs, dtype=np.float32)  # (K, dim)
        K = len(self.L)
        self.W = rng.dirichlet(np.full(K, 0.3), size=total).astype(np.float32)
        self.sigma = rng.uniform(0.08, 0.25, total).astype(np.float32)
        self.logscale = rng.normal(0.0, 0.5, total).astype(np.float32)
        self.pool = rng.standard_normal(2**22).astype(np.float32)
        self.offset = rng.integers(0, len(self.pool) - dim, total)
        self.dead = np.zeros(dim, bool) if dead is None else dead
        self.zero_thr = -2.6
        self._windows = np.lib.stride_tricks.sliding_window_view(self.pool, dim)

    def __len__(self) -> int:
        return self.n

    def rows(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        noise = self._windows[self.offset[idx]]  # (len, dim) copy
        with threadpool_limits(1):  # a thin matrix product: threads only contend
            out = self.W[idx] @ self.L
        out += self.sigma[idx, None] * noise
        out += self.logscale[idx, None]
        np.exp(out, out=out)
        out[noise < self.zero_thr] = 0.0  # ~0.5% exact zeros, different per row
        out[:, self.dead] = 0.0
        return out

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= self.n)):
            raise IndexError("row indices out of range")
        return self.rows(idx)


class TimedRows:
    """Wraps a zoo and accumulates the seconds spent producing rows."""

    def __init__(self, zoo):
        self.zoo, self.seconds = zoo, 0.0

    def __len__(self) -> int:
        return len(self.zoo)

    def __getitem__(self, idx):
        t = time.perf_counter()
        out = self.zoo[idx]
        self.seconds += time.perf_counter() - t
        return out


def make_basis(dim: int, basis_dir: str | None, t0_file: str | None, seed: int):
    """(K, dim) basis logs, (dim,) dead-filter mask, t0 (dim,), description."""
    rng = np.random.default_rng(seed + 1)
    files = sorted(glob.glob(os.path.join(basis_dir, "*.t2v.npz"))) if basis_dir else []
    if basis_dir and not files:
        raise SystemExit(f"no *.t2v.npz under {basis_dir}")
    if files:
        from task2vec import Embedding

        V = np.stack([Embedding.load(f).vector for f in files])
        cols = np.arange(V.shape[1]) if dim >= V.shape[1] else np.sort(rng.choice(V.shape[1], dim, replace=False))
        if dim > V.shape[1]:
            raise SystemExit(f"--dim {dim} exceeds the real embeddings' {V.shape[1]} filters")
        V = V[:, cols]
        dead = (V == 0).all(0)
        L = np.log(V + 1e-3 * V.mean())
        L -= L.mean(1, keepdims=True)
        t0 = _trivial(files[0], t0_file)[cols]
        return L, dead, t0, f"{len(files)} real embeddings from {basis_dir}"
    level = rng.normal(0, 2.5, dim)
    L = level + rng.normal(0, 0.57, (16, dim))
    t0 = np.exp(level + rng.normal(0, 1.0, dim))  # a prior of the rows' own scale, as the real one is
    return L, None, t0, "16 random log-normal bases"


def _trivial(first_file: str, t0_file: str | None) -> np.ndarray:
    """t0: ``--t0 FILE``, else the trivial task of the first real embedding (task2vec.space.trivial)."""
    from task2vec import Embedding
    from task2vec.space.trivial import trivial_embedding

    return Embedding.load(t0_file).vector if t0_file else trivial_embedding(Embedding.load(first_file)).vector


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def latency(index, Q: np.ndarray, k: int, timed: TimedRows | None = None, warm: int = 3):
    for q in Q[:warm]:
        index.search(q, k)
    ms, fetch = [], []
    for q in Q:
        f0 = timed.seconds if timed else 0.0
        t = time.perf_counter()
        index.search(q, k)
        ms.append((time.perf_counter() - t) * 1e3)
        fetch.append(((timed.seconds if timed else 0.0) - f0) * 1e3)
    ms, fetch = np.array(ms), np.array(fetch)
    return np.median(ms), np.percentile(ms, 95), np.median(ms - fetch), np.percentile(ms - fetch, 95)


def spearman_surrogate(index, zoo, Q: np.ndarray, t0, alpha: float, m: int, seed: int) -> tuple[float, float]:
    """Spearman between the flat surrogate and the exact d_asym over m random zoo rows, per query."""
    from scipy.stats import spearmanr

    from task2vec.space.distance import asymmetric_scores

    idx = np.sort(np.random.default_rng(seed).choice(len(zoo), size=min(m, len(zoo)), replace=False))
    rows = zoo[idx]
    flat = AsymmetricIndex(t0, alpha, kind="flat").fit(rows)
    sur = flat.surrogate_scores(Q)
    exact = asymmetric_scores(rows, Q, t0, alpha)
    rho = [spearmanr(sur[j], exact[j]).correlation for j in range(len(Q))]
    return float(np.mean(rho)), float(np.min(rho))


def real_leave_one_out(basis_dir: str, t0_file: str | None, alpha: float) -> str:
    """Spearman(surrogate, exact d_asym) ranking each real embedding's zoo of the others."""
    from scipy.stats import spearmanr

    from task2vec import Embedding
    from task2vec.space.distance import asymmetric

    files = sorted(glob.glob(os.path.join(basis_dir, "*.t2v.npz")))
    E = np.stack([Embedding.load(f).vector for f in files])
    t0 = _trivial(files[0], t0_file)
    rho, top3 = [], []
    for j in range(len(E)):
        zoo = np.delete(E, j, 0)
        sur = AsymmetricIndex(t0, alpha).fit(zoo).surrogate_scores(E[j])[0]
        exact = asymmetric(zoo, E[j], t0, alpha)
        rho.append(spearmanr(sur, exact).correlation)
        top3.append(int(np.argmin(exact)) in np.argsort(sur)[:3])
    return (f"real embeddings, leave-one-out over {len(E)}: Spearman(surrogate, exact) mean {np.mean(rho):.3f}, "
            f"median {np.median(rho):.3f}, min {np.min(rho):.3f}; exact best model in the surrogate's top 3 "
            f"for {np.mean(top3):.0%} of the tasks")


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=17056)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--basis", default=None, help="folder of real *.t2v.npz used as the zoo's basis")
    ap.add_argument("--t0", default=None, help="trivial-task embedding file (with --basis; default: that of the first)")
    ap.add_argument("--nprobe", default="16,32,64,128", help="comma list of nprobe values to sweep")
    ap.add_argument("--rerank", default="100,200,400", help="comma list of rerank values to sweep")
    ap.add_argument("--flat-n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                    help="faiss index device (cuda: faiss GPU, when installed)")
    a = ap.parse_args()
    import faiss

    L, dead, t0, basis_desc = make_basis(a.dim, a.basis, a.t0, a.seed)
    if a.basis:
        print(real_leave_one_out(a.basis, a.t0, a.alpha))
    zoo = SyntheticZoo(a.n, a.dim, L, extra=max(1000, a.queries), seed=a.seed, dead=dead)
    Q = zoo.rows(np.arange(a.n, a.n + a.queries)).astype(np.float64)
    print(f"zoo: {a.n:,} x {a.dim} generated rows ({basis_desc}); {a.queries} queries, k={a.k}, alpha={a.alpha}; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, device {a.device}")

    timed = TimedRows(zoo)
    t = time.perf_counter()
    index = AsymmetricIndex(t0, a.alpha, kind="ivfpq", device=a.device, seed=a.seed).fit(timed)
    fit_s = time.perf_counter() - t
    faiss_bytes = len(faiss.serialize_index(index.index_))
    other = index.complexity_.nbytes + index.pca_components_.nbytes + index.pca_mean_.nbytes
    print(f"ivfpq fit: {fit_s:.1f} s (of which {timed.seconds:.1f} s generating rows); nlist {index.nlist_}, "
          f"pca_dim {index.pca_dim}, pq_m {index.pq_m}; calibrated s {index.scale_:.3f}, "
          f"lambda {index.level_weight_:g}, w {index.complexity_weight_:.3f}; "
          f"index memory {mb(faiss_bytes + other)} (faiss {mb(faiss_bytes)} + complexity/PCA {mb(other)})")

    t = time.perf_counter()
    gt_s, gt_i = brute_force(zoo, Q, t0, a.alpha, a.k, engine="numba")
    print(f"exact ground truth (streaming brute force, numba, generation included): "
          f"{time.perf_counter() - t:.1f} s for {a.queries} queries")

    nprobes = [int(x) for x in a.nprobe.split(",")]
    reranks = [int(x) for x in a.rerank.split(",")]
    print(f"  sweep (recall@{a.k} vs exact; median ms per single query, without generating the re-ranked rows):")
    for nprobe in nprobes:
        for rerank in reranks:
            index.nprobe, index.rerank = nprobe, rerank
            s, i = index.search(Q, a.k)
            gap = np.abs(s[:, -1] - gt_s[:, -1]).max()
            med_x = latency(index, Q, a.k, timed, warm=1)[2]
            print(f"  nprobe {nprobe:3d} rerank {rerank:4d}: recall@{a.k} {recall(i, gt_i):.3f}, {med_x:.1f} ms "
                  f"(max |k-th score - exact k-th| {gap:.1e})")
    index.nprobe, index.rerank = AsymmetricIndex(t0).nprobe, None  # the defaults
    s, i = index.search(Q, a.k)
    med, p95, med_x, p95_x = latency(index, Q, a.k, timed)
    print(f"ivfpq latency (nprobe {index.nprobe}, rerank {index.candidates}: recall@{a.k} {recall(i, gt_i):.3f}), "
          f"one query at a time: "
          f"median {med:.1f} ms, p95 {p95:.1f} ms; without generating the re-ranked rows: "
          f"median {med_x:.1f} ms, p95 {p95_x:.1f} ms")
    rho, rho_min = spearman_surrogate(index, zoo, Q, t0, a.alpha, 5000, a.seed)
    print(f"surrogate vs exact d_asym over 5,000 random zoo rows: Spearman mean {rho:.3f}, min {rho_min:.3f}")

    del index
    if a.flat_n:
        rows = zoo.rows(np.arange(min(a.flat_n, a.n)))
        t = time.perf_counter()
        flat = AsymmetricIndex(t0, a.alpha, kind="flat", device=a.device).fit(rows)
        fit_s = time.perf_counter() - t
        s, i = flat.search(Q, a.k)
        bs, bi = brute_force(rows, Q, t0, a.alpha, a.k)
        same = np.array_equal(i, bi) and np.array_equal(s, bs)
        med, p95, *_ = latency(flat, Q, a.k, warm=1)
        print(f"flat, {len(rows):,} x {a.dim} in memory, every entry re-ranked: fit {fit_s:.1f} s, "
              f"median {med:.0f} ms, p95 {p95:.0f} ms per query; identical to brute force: {same}")
        if len(rows) <= 1000:
            return
        flat = AsymmetricIndex(t0, a.alpha, kind="flat", rerank=1000, device=a.device).fit(rows)
        s, i = flat.search(Q, a.k)
        med, p95, *_ = latency(flat, Q, a.k, warm=1)
        print(f"flat, rerank 1000 (surrogate candidates): median {med:.0f} ms, p95 {p95:.0f} ms; "
              f"recall@{a.k} {recall(i, bi):.3f}")


if __name__ == "__main__":
    main()
