"""Seconds per target as the zoo grows: LogME over every entry against `recommend`'s shortlist.

    TASK2VEC_SHARED=../shared python benchmarks/cost_model.py [--cache DIR] [--sizes 13 100 1000]

LogME over a zoo runs one forward pass of every entry over the target's images, then LogME on
each entry's features: its cost grows with the zoo. ``recommend`` runs one pass of the probe (the
Fisher embedding), ranks the whole zoo by d_asym (arrays only), then runs the forward pass and LogME
of the checked entries alone (the generalist's features come with the embedding): a cost that
barely grows with the zoo. The per-entry figures are the model-selection benchmark's own
measurements (its cache, medians over the targets: the same images, the same machine); the
ranking is timed here on zoos of each size (the real source embeddings of ``zoo/demo``, repeated
with noise beyond its 13 rows). Writes ``results/cost_model.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from task2vec.embedding.embedding import Embedding
from task2vec.zoo.cache import user_cache_dir
from task2vec.io import write_rows_csv
from task2vec.zoo.transferability import logme
from task2vec.zoo.zoo import Zoo

ROOT = Path(__file__).resolve().parents[1]


def embedding_costs(cache: Path) -> dict[tuple, float]:
    """Median seconds of the cached target embeddings, by (max_rank, fisher_images) as each file records."""
    embed: dict[tuple, list[float]] = {}
    for path in (cache / "embeddings").glob("*.t2v.npz"):
        meta = Embedding.load(path).meta
        s = meta["method"]
        embed.setdefault((s.get("max_rank"), s.get("fisher_images")), []).append(meta["seconds"])
    return {k: float(np.median(v)) for k, v in sorted(embed.items(), key=lambda kv: (-kv[0][0], -(kv[0][1] or 1e9)))
            if len(v) >= 5}


def variant_name(variant: tuple) -> str:
    max_rank, fisher_images = variant
    return f"max_rank {max_rank}" + ("" if fisher_images is None else f", Fisher on {fisher_images} images")


def median_costs(cache: Path, n_logme: int = 40) -> dict[str, float]:
    """Median seconds per target: one entry's forward pass and one LogME."""
    timings = json.loads((cache / "timings.json").read_text())
    forward = [v for k, v in timings.items() if k.startswith("forward/")]
    logme_s = []
    for path in sorted((cache / "features").glob("*/*.npz"))[:n_logme]:
        with np.load(path) as z:
            feats = z["train_features"].astype(np.float64)
        labels = np.arange(len(feats)) % max(2, len(feats) // 10)  # the cost depends on the shape alone
        start = time.perf_counter()
        logme(feats, labels)
        logme_s.append(time.perf_counter() - start)
    return {"forward": float(np.median(forward)), "logme": float(np.median(logme_s))}


def ranking_seconds(zoo: Zoo, n: int, repeats: int = 5) -> float:
    """Seconds of one ``Zoo.rank``-style scoring of ``n`` entries (d_sym to the target, minus alpha x complexity)."""
    from task2vec.space.distance import complexity, symmetric

    rng = np.random.default_rng(0)
    base = zoo.source
    rows = base[rng.integers(0, len(base), n)] * rng.lognormal(0, 0.1, (n, base.shape[1]))
    query = base[0] * rng.lognormal(0, 0.1, base.shape[1])
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        score = symmetric(rows, query) - zoo.alpha * complexity(rows, zoo.t0)
        np.argsort(score, kind="stable")
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(user_cache_dir() / "model_selection"),
                    help="the model-selection benchmark's cache (default: the per-user cache)")
    ap.add_argument("--zoo", default=str(ROOT / "zoo" / "demo"), help="the zoo whose source rows are repeated")
    ap.add_argument("--sizes", type=int, nargs="+", default=[13, 100, 1000], help="zoo sizes (default: 13 100 1000)")
    ap.add_argument("--checked", type=int, default=1,
                    help="entries the shortlist scores besides the generalist (default: 1, recommend's check)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_model.csv"))
    args = ap.parse_args(argv)
    zoo = Zoo.load(args.zoo)
    c, embeds = median_costs(Path(args.cache)), embedding_costs(Path(args.cache))
    if not embeds:
        sys.exit(f"error: {args.cache} holds too few target embeddings; run benchmarks/model_selection.py first")
    per_entry = c["forward"] + c["logme"]
    print("medians per target: embedding " + ", ".join(f"{s:.2f} s ({variant_name(v)})" for v, s in embeds.items())
          + f"; one entry's forward pass {c['forward']:.3f} s, its LogME {c['logme']:.4f} s")
    rows = []
    for n in args.sizes:
        rank = ranking_seconds(zoo, n)
        logme_all = n * per_entry
        for variant, embed in embeds.items():
            name = variant_name(variant)
            ours = embed + rank + args.checked * per_entry + c["logme"]
            rows.append({"entries": n, "embedding": name, "ranking_s": rank, "recommend_s": ours,
                         "logme_all_s": logme_all, "ratio": ours / logme_all})
    print(f"{'entries':>8} {'embedding':>34} {'ranking s':>10} {'recommend s':>12} {'LogME-all s':>12} {'ratio':>7}")
    for r in rows:
        print(f"{r['entries']:>8} {r['embedding']:>34} {r['ranking_s']:>10.4f} {r['recommend_s']:>12.2f} "
              f"{r['logme_all_s']:>12.2f} {r['ratio']:>7.2f}")
    print(f"wrote {write_rows_csv(args.out, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
