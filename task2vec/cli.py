"""Command-line interface: a thin layer over the public API.

Every bad input ends with one line ``task2vec: error: ...`` on stderr and exit code 2.

Only modules without torch are imported here (:mod:`task2vec.defaults`, :mod:`task2vec.distance`,
:mod:`task2vec.taskmap`, ...; numba, matplotlib and UMAP load inside the functions that use them);
the commands that need torch import it when they run, so ``--help``, ``distance`` and ``map``
start without it.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from . import taskmap
from .version import __version__
from .cli_finetune import add_finetune_parsers
from .cli_zoo import add_zoo_parsers
from .defaults import EMBEDDING_DEFAULTS, EMBEDDING_SETTINGS, METHODS, OFFLINE_ENV, PROBE, WEIGHTS_ENV
from .distance import ALPHA, KINDS, pairwise
from .embedding import Embedding, check_compatible
from .errors import Task2VecError, UsageError
from .io import add_force_flag, atomic_open, check_writable
from .memory import keep_freed_memory
from .trivial import recorded_probe, trivial_embedding
from .validate import integer_flag, number_flag, seed_flag

if TYPE_CHECKING:
    from .embed import Task2Vec
    from .probe import Probe

ZOO_SETTING = " (default: the zoo's setting)"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends each option's help with ``(default: X)``, unless the help already says its default or
    there is no value to show (None or False: the help says what an unset flag means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "%(default)" in text or "(default:" in text
                or action.default is None or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """An argument parser (and, through ``add_subparsers``, sub-parsers of the same class) that shows
    defaults in help and reports a malformed command line as one :class:`UsageError` line, not
    argparse's usage block."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = DefaultsHelpFormatter,
                 **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise ``message`` as a :class:`UsageError` (``main`` prints it as ``task2vec: error: ...``, exit 2).

        A flag type's own complaint (:mod:`task2vec.validate`) reads ``--alpha must be a finite
        number, got nan``; argparse's others (unknown flag, missing argument) point to the help.
        """
        own = re.fullmatch(r"argument ([^:]+): (must .*)", message, flags=re.S)
        if own:
            raise UsageError(f"{own[1].split('/')[-1]} {own[2]}")
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_embedding_args(p: argparse.ArgumentParser, probe_flags: bool = True, zoo_settings: bool = False,
                       defaults: dict[str, Any] | None = None) -> None:
    """The flags of every command that embeds a dataset.

    With ``zoo_settings`` the Task2Vec settings a zoo records default to None: unset, they fall
    back to the zoo's settings (:meth:`task2vec.zoo.Zoo.embedder`). ``defaults``: a command's own
    defaults for some of them (``recommend`` embeds its targets at ``max_rank`` 1).
    """
    def setting(name: str, text: str) -> dict[str, Any]:
        if defaults and name in defaults:
            return {"default": defaults[name], "help": text}
        if zoo_settings and name in EMBEDDING_SETTINGS:
            return {"default": None, "help": text + ZOO_SETTING}
        return {"default": EMBEDDING_DEFAULTS[name], "help": text}

    g = p.add_argument_group("embedding")
    if probe_flags:
        g.add_argument("--probe", default=PROBE,
                       help="probe network: mobilenet_v2, resnet18, resnet34 (the paper's) or any timm name")
        g.add_argument("--weights", metavar="FILE",
                       help=f"probe weights, .safetensors or .pth (default: ${WEIGHTS_ENV}/<probe>*.safetensors, then a "
                            f"download, which ${OFFLINE_ENV} or $HF_HUB_OFFLINE turns off)")
        g.add_argument("--image-size", type=integer_flag(), metavar="PX",
                       help="override the probe's input resolution (default: the probe's own)")
        g.add_argument("--random-init", action="store_true", help="random probe weights (for testing only)")
    g.add_argument("--method", choices=METHODS,
                   **setting("method", "Fisher over the model's own labels: exact expectation, montecarlo samples, "
                                       "empirical (true labels), or the variational robust Fisher"))
    g.add_argument("--max-samples", type=integer_flag(), metavar="N", **setting("max_samples", "images used, class-balanced"))
    g.add_argument("--min-images-per-class", type=integer_flag(), metavar="K",
                   **setting("min_images_per_class", "draw at least K images per class, above --max-samples if need be"))
    g.add_argument("--max-rank", type=integer_flag(), metavar="R",
                   **setting("max_rank", "exact method: leading eigen-directions of the label distribution kept"))
    g.add_argument("--head-prior", type=number_flag(), metavar="P",
                   **setting("head_prior", "precision of the Gaussian prior on the task head's weights; its penalty "
                                           "per image is P/n"))
    g.add_argument("--samples-per-image", type=integer_flag(), metavar="S",
                   **setting("samples_per_image", "montecarlo method: labels drawn per image"))
    g.add_argument("--batch-size", type=integer_flag(), metavar="B", **setting("batch_size", "images per forward pass"))
    g.add_argument("--noise-target", type=number_flag(), metavar="D",
                   **setting("noise_target", "adaptive stopping: the Fisher pass stops after the first round of "
                                             "--round-images images whose half-split noise (d_sym) is below D; "
                                             "unset: every drawn image"))
    g.add_argument("--round-images", type=integer_flag(), metavar="N",
                   **setting("round_images", "adaptive stopping: images per round, one class at a time in turn"))
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    g.add_argument("--seed", type=seed_flag(), metavar="S",
                   **setting("seed", "random seed of the image sample and the montecarlo labels"
                                     + (" (and of --random-init weights)" if probe_flags else "")))
    g.add_argument("--label-column", metavar="COL",
                   help="label column of a CSV dataset (default: 'label', or the only column besides the path)")
    g.add_argument("--workers", type=integer_flag(), metavar="W",
                   **setting("workers", "DataLoader worker processes for decoding"))
    g.add_argument("--max-bad-fraction", type=number_flag(), metavar="F",
                   **setting("max_bad_fraction", "fail when more than this fraction of images cannot be read"))
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def probe_from_args(args: argparse.Namespace) -> Probe:
    """The probe the ``embed`` flags name."""
    from .probe import Probe

    return Probe.create(args.probe, weights=args.weights, random_init=args.random_init,
                        image_size=args.image_size, device=args.device, seed=args.seed)


def embedder_from_args(args: argparse.Namespace, probe: Probe) -> Task2Vec:
    """Task2Vec with the ``embed`` flags' settings."""
    from .embed import Task2Vec

    return Task2Vec(probe, method=args.method, max_samples=args.max_samples,
                    min_images_per_class=args.min_images_per_class, max_rank=args.max_rank,
                    samples_per_image=args.samples_per_image, batch_size=args.batch_size, seed=args.seed,
                    head_prior=args.head_prior, noise_target=args.noise_target, round_images=args.round_images,
                    workers=args.workers, max_bad_fraction=args.max_bad_fraction, progress=not args.quiet)


def _default_output(dataset: str) -> Path:
    p = Path(dataset)
    stem = p.stem if p.suffix.lower() == ".csv" else p.resolve().name
    return Path(f"{stem}.t2v.npz")


def cmd_embed(args: argparse.Namespace) -> int:
    from .data import load_task

    out = Path(args.output) if args.output else _default_output(args.dataset)
    check_writable(out, overwrite=args.force)
    task = load_task(args.dataset, label_column=args.label_column)  # bad data fails before any download
    probe = probe_from_args(args)
    emb = embedder_from_args(args, probe).embed(task)
    emb.save(out)
    m = emb.meta
    noise = f", noise {m['noise_half_split']:.3f}" if m.get("noise_half_split") is not None else ""
    print(f"embedded {m['name']}: {m['n_images']} images, {m['n_classes']} classes, probe {probe.name} "
          f"({probe.config.input_size} px), method {args.method}, {len(emb.vector)} filters{noise}, "
          f"{m['seconds']:.1f} s -> {out}")
    return 0


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
        from .probe import Probe

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


def build_parser() -> argparse.ArgumentParser:
    """The ``task2vec`` parser with every command."""
    parser = Parser(
        prog="task2vec",
        description="Embed image-classification tasks (Task2Vec), compare and map them, and recommend the backbone to fine-tune.",
        epilog="Every command that writes an output file (embed, distance --csv, map, recommend --json, predict --json, "
               "cam) refuses to replace an existing one, before any work, unless given --force.")
    parser.add_argument("--version", action="version", version=f"task2vec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("embed", help="embed a dataset (ImageFolder folder or CSV of path,label)",
                       description="Embed a dataset as the per-filter Fisher information of the probe network.")
    p.add_argument("dataset", help="ImageFolder directory (class sub-folders, or train/ val/ splits) or a CSV")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="output file (default: <dataset>.t2v.npz)")
    add_force_flag(p)
    add_embedding_args(p)
    p.set_defaults(func=cmd_embed)

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

    add_zoo_parsers(sub, add_embedding_args)
    add_finetune_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda msg, cat, *a, **k: f"task2vec: warning: {msg}\n"
    try:
        args = build_parser().parse_args(argv)
        keep_freed_memory()  # tensors of large images: reuse freed memory, no page-fault storm (task2vec.memory)
        return args.func(args)
    except Task2VecError as exc:
        print(f"task2vec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission changed mid-run: nothing half-written is left
        print(f"task2vec: error: {exc.strerror or exc} ({exc.filename or 'output'})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("task2vec: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
