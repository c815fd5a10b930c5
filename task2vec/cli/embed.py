"""The embedding command of the CLI (`task2vec embed`) and the embedding flags every command that
embeds a dataset shares: a thin layer over :mod:`task2vec.embedding.embed`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..defaults import EMBEDDING_DEFAULTS, EMBEDDING_SETTINGS, METHODS, OFFLINE_ENV, PROBE, WEIGHTS_ENV
from ..io import add_force_flag, check_writable
from ..validate import integer_flag, number_flag, seed_flag

if TYPE_CHECKING:
    from ..embedding.embed import Task2Vec
    from ..backbones.probe import Probe

ZOO_SETTING = " (default: the zoo's setting)"


def add_embedding_args(p: argparse.ArgumentParser, probe_flags: bool = True, zoo_settings: bool = False,
                       defaults: dict[str, Any] | None = None) -> None:
    """The flags of every command that embeds a dataset.

    With ``zoo_settings`` the Task2Vec settings a zoo records default to None: unset, they fall
    back to the zoo's settings (:meth:`task2vec.zoo.zoo.Zoo.embedder`). ``defaults``: a command's own
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
    g.add_argument("--fisher-images", type=integer_flag(low=2), metavar="N",
                   **setting("fisher_images", "the Fisher pass over only the first N drawn images, one class at a time "
                                              "in turn (the head still sees every drawn image); unset: all of them"))
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
    from ..backbones.probe import Probe

    return Probe.create(args.probe, weights=args.weights, random_init=args.random_init,
                        image_size=args.image_size, device=args.device, seed=args.seed)


def embedder_from_args(args: argparse.Namespace, probe: Probe) -> Task2Vec:
    """Task2Vec with the ``embed`` flags' settings."""
    from ..embedding.embed import Task2Vec

    return Task2Vec(probe, method=args.method, max_samples=args.max_samples,
                    min_images_per_class=args.min_images_per_class, max_rank=args.max_rank,
                    samples_per_image=args.samples_per_image, batch_size=args.batch_size, seed=args.seed,
                    head_prior=args.head_prior, noise_target=args.noise_target, round_images=args.round_images,
                    fisher_images=args.fisher_images, workers=args.workers, max_bad_fraction=args.max_bad_fraction,
                    progress=not args.quiet)


def _default_output(dataset: str) -> Path:
    p = Path(dataset)
    stem = p.stem if p.suffix.lower() == ".csv" else p.resolve().name
    return Path(f"{stem}.t2v.npz")


def cmd_embed(args: argparse.Namespace) -> int:
    from ..data import load_task
    from ..distributed import init_from_env, is_main

    out = Path(args.output) if args.output else _default_output(args.dataset)
    check_writable(out, overwrite=args.force)
    task = load_task(args.dataset, label_column=args.label_column)  # bad data fails before any download
    args.device = init_from_env(args.device)  # under torchrun: join the group, one device per rank
    probe = probe_from_args(args)
    emb = embedder_from_args(args, probe).embed(task)
    if not is_main():
        return 0  # rank 0 alone writes and reports
    emb.save(out)
    m = emb.meta
    noise = f", noise {m['noise_half_split']:.3f}" if m.get("noise_half_split") is not None else ""
    print(f"embedded {m['name']}: {m['n_images']} images, {m['n_classes']} classes, probe {probe.name} "
          f"({probe.config.input_size} px), method {args.method}, {len(emb.vector)} filters{noise}, "
          f"{m['seconds']:.1f} s -> {out}")
    return 0


def add_embed_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``embed`` on the top-level sub-parsers."""
    p = sub.add_parser("embed", help="embed a dataset (ImageFolder folder or CSV of path,label)",
                       description="Embed a dataset as the per-filter Fisher information of the probe network.")
    p.add_argument("dataset", help="ImageFolder directory (class sub-folders, or train/ val/ splits) or a CSV")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="output file (default: <dataset>.t2v.npz)")
    add_force_flag(p)
    add_embedding_args(p)
    p.set_defaults(func=cmd_embed)
