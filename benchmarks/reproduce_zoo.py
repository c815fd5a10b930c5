"""Re-embed every source of a zoo spec afresh and compare with the committed zoo, entry by entry.

The zoo's source embeddings are the recommender's memory: a refactor, a dependency upgrade or
another machine must give the same vectors from the same images. This builds the spec's zoo in
a temporary folder (``zoo build`` without training: the probe is fixed, no expert is needed) and
writes, per entry, whether the vector is bit-identical and its largest relative difference:

    TASK2VEC_SHARED=../shared python benchmarks/reproduce_zoo.py zoo/demo/spec.yaml --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from task2vec.zoo.spec import build_zoo
from task2vec.zoo.zoo import Zoo


def compare(committed: Zoo, fresh: Zoo, only: list[str] | None = None) -> list[dict[str, object]]:
    """One row per entry of the committed zoo: bit-identical or not, and the largest relative difference."""
    a, b = committed.model_embeddings(), fresh.model_embeddings()
    rows = []
    for i, entry_id in enumerate(committed.ids):
        if entry_id not in fresh.ids and only is not None and entry_id not in only:
            continue
        if entry_id not in fresh.ids:
            rows.append({"entry": entry_id, "identical": False, "max_rel_diff": float("nan")})
            continue
        x, y = a[i], b[fresh.ids.index(entry_id)]
        rel = float(np.max(np.abs(x - y) / np.maximum(np.abs(x), np.finfo(np.float64).tiny)))
        rows.append({"entry": entry_id, "identical": bool(np.array_equal(x, y)), "max_rel_diff": rel})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="the zoo's spec (its 'zoo:' folder holds the committed zoo)")
    ap.add_argument("--only", nargs="+", metavar="ID", help="re-embed only these entries (default: every one)")
    ap.add_argument("--csv", metavar="OUT.csv", help="also write the rows as CSV")
    args = ap.parse_args(argv)
    spec_path = Path(args.spec).resolve()
    spec = yaml.safe_load(spec_path.read_text())
    committed = Zoo.load(spec_path.parent / spec["zoo"])
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / spec_path.name
        # the same spec, writing elsewhere (the experts' checkpoints are not needed to embed their sources)
        fresh_dir = Path(tmp) / "zoo"
        spec["zoo"] = str(fresh_dir)
        if args.only:
            unknown = sorted(set(args.only) - {e["id"] for e in spec["entries"]})
            if unknown:
                ap.error(f"the spec has no entry {unknown[0]!r}")
            spec["entries"] = [e for e in spec["entries"] if e["id"] in args.only]
            spec.pop("always_check", None)  # it may name entries left out
        copy.write_text(yaml.safe_dump(spec, sort_keys=False))
        fresh = build_zoo(copy, log=lambda _: None, progress=False, train=False)
        rows = compare(committed, fresh, args.only)
        shutil.rmtree(fresh_dir, ignore_errors=True)
    for r in rows:
        print(f"{r['entry']:<28} identical={r['identical']!s:<5} max relative difference {r['max_rel_diff']:.3g}")
    same = sum(bool(r["identical"]) for r in rows)
    print(f"{same}/{len(rows)} entries bit-identical")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["entry", "identical", "max_rel_diff"])
            w.writeheader()
            w.writerows(rows)
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
