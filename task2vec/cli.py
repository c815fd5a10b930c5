"""Command-line interface: a thin layer over the public API.

Every bad input ends with one line ``task2vec: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from . import __version__
from .embed import METHODS, Task2Vec
from .errors import Task2VecError
from .io import check_writable
from .probe import WEIGHTS_ENV, Probe


def add_embedding_args(p: argparse.ArgumentParser, probe_flags: bool = True) -> None:
    """The flags of every command that embeds a dataset."""
    g = p.add_argument_group("embedding")
    if probe_flags:
        g.add_argument("--probe", default="mobilenet_v2",
                       help="probe network: mobilenet_v2 (default), resnet18, resnet34 (the paper's) or any timm name")
        g.add_argument("--weights", metavar="FILE",
                       help=f"probe weights (.safetensors/.pth); default: ${WEIGHTS_ENV}/<probe>*.safetensors, then a download")
        g.add_argument("--image-size", type=int, metavar="PX", help="override the probe's input resolution")
        g.add_argument("--random-init", action="store_true", help="random probe weights (for testing only)")
    g.add_argument("--method", choices=METHODS, default="exact",
                   help="Fisher over the model's own labels: exact expectation (default), montecarlo samples, "
                        "empirical (true labels), or the variational robust Fisher")
    g.add_argument("--max-samples", type=int, default=10_000, metavar="N", help="images used, class-balanced (default 10000)")
    g.add_argument("--max-rank", type=int, default=16, metavar="R",
                   help="exact method: leading eigen-directions of the label distribution kept (default 16)")
    g.add_argument("--samples-per-image", type=int, default=1, metavar="S", help="montecarlo method: labels drawn per image")
    g.add_argument("--batch-size", type=int, default=32, metavar="B")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    g.add_argument("--seed", type=int, default=0, metavar="S")
    g.add_argument("--label-column", metavar="COL", help="label column of a CSV dataset")
    g.add_argument("--workers", type=int, default=0, metavar="W", help="DataLoader worker processes for decoding")
    g.add_argument("--max-bad-fraction", type=float, default=0.05, metavar="F",
                   help="fail when more than this fraction of images cannot be read (default 0.05)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def probe_from_args(args: argparse.Namespace) -> Probe:
    return Probe.create(args.probe, weights=args.weights, random_init=args.random_init,
                        image_size=args.image_size, device=args.device, seed=args.seed)


def embedder_from_args(args: argparse.Namespace, probe: Probe) -> Task2Vec:
    return Task2Vec(probe, method=args.method, max_samples=args.max_samples, max_rank=args.max_rank,
                    samples_per_image=args.samples_per_image, batch_size=args.batch_size, seed=args.seed,
                    workers=args.workers, max_bad_fraction=args.max_bad_fraction, progress=not args.quiet)


def _default_output(dataset: str) -> Path:
    p = Path(dataset)
    stem = p.stem if p.suffix.lower() == ".csv" else p.resolve().name
    return Path(f"{stem}.t2v.npz")


def cmd_embed(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else _default_output(args.dataset)
    check_writable(out)
    probe = probe_from_args(args)
    emb = embedder_from_args(args, probe).embed(args.dataset, label_column=args.label_column)
    emb.save(out)
    m = emb.meta
    noise = f", noise {m['noise_half_split']:.3f}" if m.get("noise_half_split") is not None else ""
    print(f"embedded {m['name']}: {m['n_images']} images, {m['n_classes']} classes, probe {probe.name} "
          f"({probe.config.input_size} px), method {args.method}, {len(emb.vector)} filters{noise}, "
          f"{m['seconds']:.1f} s -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="task2vec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"task2vec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("embed", help="embed a dataset (ImageFolder folder or CSV of path,label)",
                       description="Embed a dataset as the per-filter Fisher information of the probe network.")
    p.add_argument("dataset", help="ImageFolder directory (class sub-folders, or train/ val/ splits) or a CSV")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="output file (default: <dataset>.t2v.npz)")
    add_embedding_args(p)
    p.set_defaults(func=cmd_embed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"task2vec: warning: {msg}\n"
    try:
        return args.func(args)
    except Task2VecError as exc:
        print(f"task2vec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("task2vec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
