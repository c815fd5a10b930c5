"""Does the fine-tuner's recipe pay off on small data? Two studies on real data from ../shared/data.

    python examples/finetune_study.py books      [--seeds 5] [--size 64] [--epochs 15] [--val-fraction 0.8]
    python examples/finetune_study.py multitask  [--seeds 5] [--size 64]  [--epochs 12] [--per-class 20]

``books``: small_books (about 9 photos per book, 27 backgrounds) with the ImageNet MobileNetV2:
pretrained + strong augmentation against random-init training (same augmentation) and
pretrained without augmentation.

``multitask``: MNIST digits from a few images per class, with the stroke morphometrics of
``mnist_test/morphometrics.csv`` (thickness, slant, width, ...) as auxiliary regression heads,
against the single-task baseline. The subset is a folder of symlinks under --out (the data
are never copied), with its own morphometrics table keyed by the same relative paths.

Each configuration is trained for every seed; the table (mean ± std of validation accuracy)
is printed and written to ``<out>/<study>.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from task2vec.finetune.augment import preset
from task2vec.finetune.trainer import fit
from task2vec.finetune.metrics import mean_std

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.safetensors"


def mnist_subset(out: Path, per_class: int, val_per_class: int, seed: int) -> Path:
    """train/ and val/ symlink folders of MNIST plus morphometrics.csv for exactly those images."""
    src = SHARED / "data" / "mnist_test"
    root = out / f"mnist_{per_class}pc"
    if (root / "morphometrics.csv").is_file():
        return root
    with open(src / "morphometrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    keep = []
    for digit in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == digit]
        pick = rng.permutation(len(mine))[:per_class + val_per_class]
        for j, k in enumerate(pick):
            keep.append(("train" if j < per_class else "val", mine[k]))
    table = []
    for split, r in keep:
        rel = f"{split}/{r['path']}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to((src / r["path"]).resolve())
        table.append({**r, "path": rel})
    with open(root / "morphometrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return root


def run(study: str, data: Path, configs: dict[str, dict], seeds: int, out: Path) -> list[dict]:
    rows = []
    for name, kw in configs.items():
        t0 = time.perf_counter()
        res = fit(data, out / study / name, repeats=seeds, resume=True, progress=False, device="cpu", **kw)
        runs = res.runs if seeds > 1 else [res]
        accs = [r.val_accuracy for r in runs]
        bal = [r.val["balanced_accuracy"] for r in runs]
        m, s = mean_std(accs)
        mb, sb = mean_std(bal)
        ml, sl = mean_std([r.val["loss"] for r in runs])
        rows.append({"config": name, "val_accuracy_mean": m, "val_accuracy_std": s, "balanced_mean": mb,
                     "balanced_std": sb, "val_loss_mean": ml, "val_loss_std": sl, "seeds": len(accs),
                     "per_seed": " ".join(f"{a:.3f}" for a in accs),
                     "seconds_per_run": (time.perf_counter() - t0) / len(accs)})
        print(f"{name:<38} {m:.3f} ± {s:.3f}  (balanced {mb:.3f} ± {sb:.3f}, loss {ml:.3f} ± {sl:.3f})  "
              f"seeds: {rows[-1]['per_seed']}", flush=True)
    with open(out / f"{study}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / f"{study}.md", "w") as f:
        f.write("| configuration | val accuracy (mean ± std) | balanced accuracy | val loss | seeds | s/run |\n"
                "|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['config']} | {r['val_accuracy_mean']:.3f} ± {r['val_accuracy_std']:.3f} | "
                    f"{r['balanced_mean']:.3f} ± {r['balanced_std']:.3f} | {r['val_loss_mean']:.3f} ± {r['val_loss_std']:.3f} | "
                    f"{r['seeds']} | {r['seconds_per_run']:.0f} |\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=["books", "multitask"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--size", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--per-class", type=int, default=20, help="multitask: training images per digit")
    ap.add_argument("--aux-weights", type=float, nargs="+", default=[0.3, 0.05],
                    help="multitask: the λ values compared (per auxiliary column)")
    ap.add_argument("--val-fraction", type=float, default=0.8,
                    help="books: share of the photos held out (default 0.8: 2 training photos per book)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "finetune")
    args = ap.parse_args(argv)
    if not WEIGHTS.is_file():
        sys.exit(f"needs {WEIGHTS} (set TASK2VEC_SHARED)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.study == "books":
        base = dict(model="mobilenet_v2", weights=WEIGHTS, image_size=args.size or 64, epochs=args.epochs or 15,
                    batch_size=16, balance="loss-weights", patience=0, val_fraction=args.val_fraction)
        configs = {
            "pretrained + strong augmentation": {**base, "augment": "strong"},
            "pretrained, no augmentation": {**base, "augment": "none"},
            "random init + strong augmentation": {**base, "augment": "strong", "random_init": True, "lr": 3e-3,
                                                  "body_lr": 1.0},
        }
        run("books", SHARED / "data" / "small_books", configs, args.seeds, args.out)
    else:
        data = mnist_subset(args.out, args.per_class, 50, seed=0)
        base = dict(model="mobilenet_v2", weights=WEIGHTS, image_size=args.size or 64, epochs=args.epochs or 12,
                    batch_size=32, patience=0)
        aug = replace(preset("light"), hflip=0.0, rotate=10.0)  # digits must not be mirrored
        heads = dict(aux_labels=data / "morphometrics.csv",
                     aux_columns=["area", "length", "thickness", "slant", "width", "height"])
        configs = {"digits only": {**base, "augment": aug}}
        for lam in args.aux_weights:  # λ per column: six columns, so the auxiliary total is 6 λ
            configs[f"digits + morphometrics heads (λ={lam:g} each)"] = {**base, "augment": aug, **heads, "aux_weight": lam}
        run("multitask", data, configs, args.seeds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
