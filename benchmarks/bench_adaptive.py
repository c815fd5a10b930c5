"""Adaptive stopping against the fixed cap on real folders: images used, noise, seconds and the picks.

Each dataset is embedded with a zoo's probe and settings (``max_rank`` 16, a cap of ``--cap``
images), once with every drawn image and once with ``noise_target``/``round_images``, and each
embedding is ranked by ``recommend`` (no check); the d_sym between the two embeddings is printed.

    python benchmarks/bench_adaptive.py [--zoo zoo/demo] [--cap 600] [--noise-target 0.05]
        [--round-images 100] [--datasets flowers5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from task2vec.space.distance import symmetric
from task2vec.zoo.recommendation import recommend
from task2vec.zoo.zoo import Zoo

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(Path(__file__).resolve().parents[1] / "zoo" / "demo"))
    ap.add_argument("--cap", type=int, default=600, help="max_samples of both runs")
    ap.add_argument("--noise-target", type=float, default=0.05)
    ap.add_argument("--round-images", type=int, default=100)
    ap.add_argument("--datasets", default="flowers5", help="folders of ../shared/data, comma-separated")
    a = ap.parse_args()
    zoo = Zoo.load(a.zoo)
    probe = zoo.load_probe(device="cpu")
    for name in a.datasets.split(","):
        embs = {}
        for mode, extra in (("fixed", {}), ("adaptive", {"noise_target": a.noise_target,
                                                         "round_images": a.round_images})):
            t = time.perf_counter()
            emb = zoo.embedder(probe, max_samples=a.cap, max_rank=16, progress=False, **extra).embed(SHARED / "data" / name)
            sec = time.perf_counter() - t
            rec = recommend(emb, zoo, check=0, k=3)
            embs[mode] = emb
            print(f"{name} {mode}: head images {emb.meta['n_images']}, Fisher images {emb.meta['fisher_images']} "
                  f"({emb.meta.get('fisher_stop', 'all')}), noise {emb.meta['noise_half_split']:.4f}, {sec:.1f} s "
                  f"(Fisher {emb.meta['seconds_by_stage']['fisher']:.1f} s), top-3 {[c.id for c in rec.candidates]}",
                  flush=True)
        print(f"{name}: d_sym(adaptive, fixed) = {symmetric(embs['adaptive'].vector, embs['fixed'].vector):.4f}")


if __name__ == "__main__":
    main()
