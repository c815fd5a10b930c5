"""Embed a dozen tasks built from ../shared/data, draw their task map, list nearest neighbours,
and check the trivial task: does d_sym(t, t0) grow with task difficulty?

    python examples/task_space.py [--size 112] [--images 300] [--out examples/out] [--tasks main|holdout]

Tasks: whole data sets, class subsets, and tasks defined by attributes rather than classes
(MNIST thick vs thin strokes from morphometrics.csv, Omniglot by alphabet and by drawer).
Difficulty is the 5-fold cross-validated error of a logistic-regression probe on the probe
network's penultimate features of the same images.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from task2vec import Embedding, Probe, Task2Vec
from task2vec.space import taskmap
from task2vec.data import ImageTask, balanced_indices, load_rgb, load_task
from task2vec.space.distance import complexity, pairwise
from task2vec.space.trivial import trivial_embedding

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"


def subset(task: ImageTask, keep: list[str]) -> ImageTask:
    """The task restricted to some of its classes."""
    mask = np.isin(np.asarray(task.classes)[task.labels], keep)
    paths = [p for p, m in zip(task.paths, mask) if m]
    old = np.asarray(task.classes)[task.labels[mask]]
    return ImageTask(paths, np.searchsorted(sorted(keep), old), sorted(keep), task.root, source=f"{task.source}{keep}")


def mnist_strokes() -> ImageTask:
    """MNIST thick vs thin strokes (top vs bottom third of thickness), digits ignored."""
    rows = list(csv.DictReader(open(DATA / "mnist_test" / "morphometrics.csv")))
    t = np.array([float(r["thickness"]) for r in rows])
    lo, hi = np.quantile(t, [1 / 3, 2 / 3])
    keep = [(r["path"], int(v > hi)) for r, v in zip(rows, t) if v < lo or v > hi]
    return ImageTask([DATA / "mnist_test" / p for p, _ in keep], np.array([y for _, y in keep]), ["thin", "thick"],
                     DATA / "mnist_test", source="mnist_strokes")


def tasks() -> dict[str, tuple[str, ImageTask]]:
    """name -> (group, task)."""
    cifar = load_task(DATA / "cifar10_test")
    tiny = load_task(DATA / "tiny_imagenet_val")
    omni = DATA / "omniglot_small" / "labels.csv"
    return {
        "mnist": ("handwriting", load_task(DATA / "mnist_test")),
        "mnist_0v1": ("handwriting", subset(load_task(DATA / "mnist_test"), ["0", "1"])),
        "mnist_strokes": ("handwriting", mnist_strokes()),
        "notmnist": ("handwriting", load_task(DATA / "notmnist_test")),
        "oracle": ("handwriting", load_task(DATA / "oracle_mnist_test")),
        "omniglot_alphabet": ("handwriting", load_task(omni, label_column="alphabet")),
        "omniglot_drawer": ("handwriting", load_task(omni, label_column="drawer")),
        "cifar10": ("photos", cifar),
        "cifar_vehicles": ("photos", subset(cifar, ["airplane", "automobile", "ship", "truck"])),
        "cifar_cat_dog": ("photos", subset(cifar, ["cat", "dog"])),
        "tiny_imagenet": ("photos", tiny),
        "tiny_imagenet_10": ("photos", subset(tiny, tiny.classes[:10])),
        "flowers": ("photos", load_task(DATA / "flowers5")),
        "hymenoptera": ("photos", load_task(DATA / "hymenoptera")),
        "pneumonia": ("medical", load_task(DATA / "pneumoniamnist")),
    }


def holdout_tasks() -> dict[str, tuple[str, ImageTask]]:
    """Tasks kept out of the choice of the trivial-task definition, to check it afterwards."""
    notmnist = load_task(DATA / "notmnist_test")
    oracle = load_task(DATA / "oracle_mnist_test")
    cifar = load_task(DATA / "cifar10_test")
    tiny = load_task(DATA / "tiny_imagenet_val")
    mnist = load_task(DATA / "mnist_test")
    flowers = load_task(DATA / "flowers5")
    return {
        "notmnist_AE": ("handwriting", subset(notmnist, list("ABCDE"))),
        "notmnist_IJ": ("handwriting", subset(notmnist, ["I", "J"])),
        "oracle_5": ("handwriting", subset(oracle, oracle.classes[:5])),
        "mnist_3v8": ("handwriting", subset(mnist, ["3", "8"])),
        "mnist_4v9v7": ("handwriting", subset(mnist, ["4", "7", "9"])),
        "cifar_animals": ("photos", subset(cifar, ["bird", "cat", "deer", "dog", "frog", "horse"])),
        "cifar_auto_truck": ("photos", subset(cifar, ["automobile", "truck"])),
        "tiny_imagenet_20": ("photos", subset(tiny, tiny.classes[100:120])),
        "tiny_imagenet_2": ("photos", subset(tiny, tiny.classes[50:52])),
        "flowers_rose_tulip": ("photos", subset(flowers, ["rose", "tulip"])),
        "flowers_daisy_sunflower": ("photos", subset(flowers, ["daisy", "sunflower"])),
    }


def probe_error(probe: Probe, task: ImageTask, n: int, seed: int) -> float:
    """5-fold CV error of logistic regression on the probe's features of the embedded images."""
    idx = balanced_indices(task.labels, n, seed)
    feats = []
    with torch.no_grad():
        for i in range(0, len(idx), 64):
            x = torch.stack([probe.transform(load_rgb(task.paths[j])) for j in idx[i:i + 64]])
            feats.append(probe.model(probe.normalize(x)).cpu().numpy())
    y = task.labels[idx]
    folds = min(5, int(np.bincount(y)[np.bincount(y) > 0].min()))
    if folds < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return 1.0 - float(cross_val_score(clf, np.concatenate(feats), y, cv=folds).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=112, help="probe resolution (224 is the probe's own)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--max-rank", type=int, default=16, help="Fisher directions per image (Task2Vec max_rank)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out"))
    ap.add_argument("--tasks", choices=("main", "holdout"), default="main",
                    help="holdout: tasks not used when the trivial task was defined, to check it")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = Probe.create("mobilenet_v2", weights=SHARED / "weights" / "mobilenet_v2_imagenet.safetensors",
                         image_size=a.size)
    embedder = Task2Vec(probe, max_samples=a.images, max_rank=a.max_rank, progress=False)
    names, groups, embs, errors = [], [], [], []
    for name, (group, task) in (tasks() if a.tasks == "main" else holdout_tasks()).items():
        path = out / f"{name}.t2v.npz"
        emb = Embedding.load(path) if path.is_file() else None
        if emb is None or emb.meta["method"] != embedder.settings() or emb.meta["probe"] != probe.describe():
            emb = embedder.embed(task, name=name)  # missing, or made with other settings
            emb.save(path)
        err = probe_error(probe, task, a.images, seed=0)
        print(f"{name:<20} {emb.meta['n_classes']:>4} classes  linear-probe error {err:.3f}  "
              f"noise {emb.meta['noise_half_split']:.3f}  {emb.meta['seconds']:.0f} s", flush=True)
        names.append(name), groups.append(group), embs.append(emb), errors.append(err)

    D = pairwise(embs, "sym")
    print("\nnearest neighbours (symmetric distance):")
    for i, name in enumerate(names):
        order = [j for j in np.argsort(D[i]) if j != i][:3]
        print(f"  {name:<20} " + ", ".join(f"{names[j]} {D[i, j]:.3f}" for j in order))

    d0 = np.array([complexity(e, trivial_embedding(e, probe)) for e in embs])  # t0 of each task's size
    norms = np.array([np.linalg.norm(e.vector) for e in embs])
    ok = ~np.isnan(errors)
    rho_t0, p_t0 = spearmanr(d0[ok], np.asarray(errors)[ok])
    rho_norm = spearmanr(norms[ok], np.asarray(errors)[ok])[0]
    print("\ntask complexity (d_sym to the trivial task) vs linear-probe error:")
    for name, d, nrm, err in sorted(zip(names, d0, norms, errors), key=lambda r: r[1]):
        print(f"  {name:<20} d(t, t0) {d:.3f}   |F| {nrm:.3g}   error {err:.3f}")
    print(f"Spearman(d(t, t0), error) = {rho_t0:.3f} (p = {p_t0:.3f}, {ok.sum()} tasks);  "
          f"Spearman(|F|, error) = {rho_norm:.3f}")

    coords, used, note = taskmap.layout(D, "umap")
    if note:
        print(note)
    taskmap.draw(D, coords, names, out / f"taskmap_{a.tasks}.png", groups=groups, method=used,
                 title=f"{len(names)} tasks from ../shared/data ({used}, MobileNetV2 probe, {a.size} px)")
    taskmap.write_coords_csv(coords, names, out / f"taskmap_{a.tasks}.csv")
    print(f"\nmap -> {out / f'taskmap_{a.tasks}.png'}")


if __name__ == "__main__":
    main()
