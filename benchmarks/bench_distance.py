"""Time the full symmetric distance matrix of many embeddings of the real probe's size.

    python benchmarks/bench_distance.py [--n 2000] [--dim 17056]

17,056 is MobileNetV2's filter count. The vectors are Gamma-distributed like real per-filter
Fisher values (the timing does not depend on the values). Also checks the fused kernel against
the plain numpy pair formula on a sample of pairs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from task2vec.space.distance import symmetric, symmetric_matrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=17056)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    A = rng.gamma(0.5, 1e-3, size=(a.n, a.dim)).astype(np.float32)
    symmetric_matrix(A[:4])  # compile
    t = time.perf_counter()
    D = symmetric_matrix(A)
    sec = time.perf_counter() - t
    pairs = rng.integers(0, a.n, size=(20, 2))
    err = max(abs(D[i, j] - symmetric(A[i].astype(np.float64), A[j].astype(np.float64))) for i, j in pairs)
    print(f"{a.n} x {a.n} symmetric distance matrix, {a.dim} filters: {sec:.1f} s "
          f"({a.n * (a.n - 1) / 2 / sec:,.0f} pairs/s), max |error| vs numpy {err:.1e}")


if __name__ == "__main__":
    main()
