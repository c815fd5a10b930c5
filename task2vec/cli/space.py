"""The task-space commands of the CLI (`task2vec distance`, `map`): a thin layer over
:mod:`task2vec.space.distance` and :mod:`task2vec.space.taskmap`."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

from ..space import taskmap
from ..defaults import WEIGHTS_ENV
from ..space.distance import ALPHA, KINDS, pairwise
from ..embedding.embedding import Embedding, check_compatible
from ..errors import Task2VecError
from ..io import add_force_flag, atomic_open, check_writable
from ..space.trivial import recorded_probe, trivial_embedding
from ..validate import number_flag, seed_flag


def _load_embeddings(paths: Sequence[str]) -> tuple[list[Embedding], list[str]]:
    if len(paths) < 2:
        raise Task2VecError("give at least two embedding files")
    embs = [Embedding.load(p) for p in paths]
    names = [Path(p).name.removesuffix(".npz").removesuffix(".t2v") for p in paths]
    check_compatible(*embs)
    return embs, names


def _trivial(embs: list[Embedding], weights: str | None) -> Embedding:
    probe = None
    if embs[0].method != "variational" and weights:
        from ..backbones.probe import Probe

        p = recorded_probe(embs[0])
        probe = Probe.create(p["name"], weights=weights, image_size=p["input_size"])
    return trivial_embedding(embs[0], probe)


def cmd_distance(args: argparse.Namespace) -> int:
    if args.csv:
        check_writable(args.csv, overwrite=args.force)
    embs, names = _load_embeddings(args.embeddings)
    t0 = _trivial(embs, args.weights) if args.kind == "asym" else None
    D = pairwise(embs, args.kind, t0=t0, alpha=args.alpha)
    width = max(8, *(len(n) for n in names))
    print(f"{args.kind} distance" + (" (row -> column)" if args.kind == "asym" else ""))
    print(" " * width + "".join(f"{n[:9]:>10}" for n in names))
    for name, row in zip(names, D):
        print(f"{name:<{width}}" + "".join(f"{v:>10.4f}" for v in row))
    if args.csv:
        with atomic_open(args.csv, "w") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["task", *names])
            w.writerows([name, *(f"{v:.6g}" for v in row)] for name, row in zip(names, D))
    return 0


def _read_labels(path: str, names: list[str], files: list[str]) -> dict[str, dict[str, str]]:
    """Rows of a labels CSV keyed by embedding file (column ``file``) or task name (column ``task``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Task2VecError(f"labels CSV {path!r} is not readable CSV text ({type(exc).__name__})") from None
    key = "file" if rows and "file" in rows[0] else "task"
    if not rows or key not in rows[0]:
        raise Task2VecError(f"labels CSV {path!r} needs a 'file' or 'task' column")
    table = {r[key]: r for r in rows}
    return {n: table.get(Path(fl).name if key == "file" else n, table.get(fl, {})) for n, fl in zip(names, files)}


def cmd_map(args: argparse.Namespace) -> int:
    out = check_writable(args.output, overwrite=args.force)
    stem = out.with_suffix("")
    for beside in (stem.with_suffix(".csv"), stem.with_suffix(".html")):
        check_writable(beside, overwrite=args.force)
    resolved = [Path(p).resolve() for p in args.embeddings]
    twice = next((p for i, p in enumerate(args.embeddings) if resolved[i] in resolved[:i]), None)
    if twice is not None:  # one task drawn as two points on top of each other, two rows of one name: a slip
        raise Task2VecError(f"map: embedding file {twice!r} is given twice")
    embs, names = _load_embeddings(args.embeddings)
    labels = _read_labels(args.labels, names, args.embeddings) if args.labels else {}
    if args.color_by and not labels:
        raise Task2VecError("--color-by needs --labels")
    if args.color_by and not any(args.color_by in row for row in labels.values()):
        raise Task2VecError(f"labels CSV has no column {args.color_by!r}")
    display = [labels.get(n, {}).get("name") or n for n in names]
    groups = [labels.get(n, {}).get(args.color_by, "?") for n in names] if args.color_by else None
    D = pairwise(embs, "sym")
    coords, used, note = taskmap.layout(D, args.layout, seed=args.seed)
    if note:
        print(f"task2vec: note: {note}", file=sys.stderr)
    taskmap.draw(D, coords, display, out, groups=groups, method=used)
    taskmap.write_coords_csv(coords, display, stem.with_suffix(".csv"))
    info = [f"{e.meta.get('n_classes')} classes, {e.meta.get('n_images')} images, "
            f"source {e.meta.get('dataset', {}).get('source', '')}"
            for e in embs]
    taskmap.write_html(coords, display, info, stem.with_suffix(".html"), groups=groups)
    print(f"task map of {len(embs)} tasks ({used}) -> {out}, {stem.with_suffix('.csv')}, {stem.with_suffix('.html')}")
    return 0


def add_space_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``distance`` and ``map`` on the top-level sub-parsers."""
    p = sub.add_parser("distance", help="distance matrix between embedding files",
                       description="Print the distance matrix between task embeddings.")
    p.add_argument("embeddings", nargs="+", metavar="EMB.npz")
    p.add_argument("--kind", choices=KINDS, default="sym",
                   help="sym (the paper's), asym (row -> column, uses the trivial task), cosine, "
                        "domain (mean features, label-blind), kl (variational embeddings)")
    p.add_argument("--alpha", type=number_flag(low=0), default=ALPHA, help="asym: weight of the trivial-task term")
    p.add_argument("--weights", metavar="FILE",
                   help="probe weights, for the trivial task of embeddings that do not record their prior "
                        f"(default: the file they were made with when still there, else the ${WEIGHTS_ENV} lookup)")
    p.add_argument("--csv", metavar="OUT.csv", help="also write the matrix as CSV")
    add_force_flag(p)
    p.set_defaults(func=cmd_distance)

    p = sub.add_parser("map", help="2-D task map (UMAP) + clustered distance heatmap",
                       description="Draw a task map: PNG (map + heatmap + dendrogram), coordinates CSV, hover HTML.")
    p.add_argument("embeddings", nargs="+", metavar="EMB.npz")
    p.add_argument("-o", "--output", default="taskmap.png", metavar="OUT.png",
                   help="the PNG; the coordinates CSV and the HTML page go beside it, same stem")
    p.add_argument("--layout", choices=taskmap.LAYOUTS, default="umap",
                   help=f"umap, tsne or pca (classical MDS; used for fewer than {taskmap.UMAP_MIN_POINTS} tasks)")
    p.add_argument("--labels", metavar="CSV", help="CSV with a 'file' (or 'task') column, optional 'name' and more columns")
    p.add_argument("--color-by", metavar="COL", help="colour points by this column of --labels (default: one colour)")
    p.add_argument("--seed", type=seed_flag(), default=0, help="random seed of the layout")
    add_force_flag(p)
    p.set_defaults(func=cmd_map)
