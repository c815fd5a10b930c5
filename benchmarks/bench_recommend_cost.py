"""Seconds per target, end to end and timed alike: `recommend` with its defaults against LogME over the whole zoo.

    TASK2VEC_SHARED=../shared python benchmarks/bench_recommend_cost.py [--set families families-holdout]

Issue 18's cost bar (``recommend`` at most half of LogME's seconds per target). Both sides are timed
the same way, in one process, one target after the other, the order of the two alternating from
target to target: ``recommend`` is the library call (the zoo and probe loaded, the images decoded,
the embedding, the ranking, the check); LogME over the zoo loads every entry's network, decodes the
same images with the probe's preprocessing, runs one forward pass and LogME (the generalist
included: LogME has no embedding to take its features from). The model-selection benchmark's own
``seconds_per_target`` count LogME's forward passes alone; this script also counts what they leave
out. Writes ``results/recommend_cost.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_selection import SETS, SHARED  # noqa: E402
from model_selection_targets import build_target  # noqa: E402
from task2vec.backbones.models import create_body  # noqa: E402
from task2vec.backbones.probe import Probe, normalize_batch  # noqa: E402
from task2vec.data import IndexedSubset, SkipBadCollate  # noqa: E402
from task2vec.io import write_rows_csv  # noqa: E402
from task2vec.zoo.cache import user_cache_dir  # noqa: E402
from task2vec.zoo.evidence import probe_entry  # noqa: E402
from task2vec.zoo.recommendation import recommend  # noqa: E402
from task2vec.zoo.resolve import resolve_model  # noqa: E402
from task2vec.zoo.transferability import logme  # noqa: E402
from task2vec.zoo.zoo import Zoo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def logme_over_zoo(zoo: Zoo, task, probe: Probe) -> float:
    """Seconds of LogME over every entry of ``zoo`` on ``task``: load, decode, forward, LogME."""
    start = time.perf_counter()
    subset = IndexedSubset(task, np.arange(len(task)), probe.transform)
    for entry in zoo.entries:
        net = create_body(resolve_model(entry.id, zoo=zoo.path))
        body = net.body.eval()
        feats = []
        with torch.no_grad():
            for images, _labels, _index, _bad in torch.utils.data.DataLoader(subset, batch_size=64,
                                                                            collate_fn=SkipBadCollate()):
                feats.append(body(normalize_batch(images, net.config, probe.device)).float())
        logme(torch.cat(feats).numpy(), task.labels)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(ROOT / "zoo" / "demo"), help="the zoo (default: zoo/demo)")
    ap.add_argument("--set", nargs="+", choices=list(SETS), default=["families", "families-holdout"],
                    help="target sets (default: families families-holdout)")
    ap.add_argument("--cache", default=str(user_cache_dir() / "model_selection"),
                    help="the model-selection benchmark's cache, where shifted images lie (default: the per-user cache)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recommend_cost.csv"))
    args = ap.parse_args(argv)
    zoo = Zoo.load(args.zoo)
    probe_id = probe_entry(zoo)  # the entry that is the zoo's probe, found by its weights hash, in any zoo
    if probe_id is None:
        sys.exit(f"error: no entry of {args.zoo} has the zoo probe's weights")
    probe = Probe.create(zoo.probe["name"], weights=str(zoo.weights(zoo.entry(probe_id)).path),
                         image_size=zoo.probe["input_size"], device="cpu")
    rows = []
    for n, t in enumerate(t for s in args.set for t in SETS[s]):
        train = build_target(t, SHARED / "data", cache=Path(args.cache)).train
        seconds = {}
        for side in (("recommend", "logme") if n % 2 == 0 else ("logme", "recommend")):
            if side == "recommend":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.perf_counter()
                    recommend(train, zoo, k=len(zoo), weights=str(probe.weights_source), device="cpu")
                    seconds[side] = time.perf_counter() - start
            else:
                seconds[side] = logme_over_zoo(zoo, train, probe)
        rows.append({"target": t.name, "images": len(train), "recommend_s": round(seconds["recommend"], 3),
                     "logme_all_s": round(seconds["logme"], 3),
                     "ratio": round(seconds["recommend"] / seconds["logme"], 3)})
        print(f"[{n + 1}] {t.name}: recommend {seconds['recommend']:.2f} s, LogME over {len(zoo)} entries "
              f"{seconds['logme']:.2f} s, ratio {rows[-1]['ratio']:.2f}", flush=True)
    rec, lm = (np.array([r[k] for r in rows]) for k in ("recommend_s", "logme_all_s"))
    ratios = rec / lm
    print(f"{len(rows)} targets: recommend mean {rec.mean():.2f} s, LogME over the zoo mean {lm.mean():.2f} s; "
          f"ratio of means {rec.mean() / lm.mean():.2f}, median per-target ratio {np.median(ratios):.2f} "
          f"(max {ratios.max():.2f}), threads {torch.get_num_threads()}")
    print(f"wrote {write_rows_csv(args.out, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
