"""The zoo commands of the CLI (`task2vec zoo ...`, `task2vec recommend`): a thin layer over
:mod:`task2vec.zoo.zoo`, :mod:`task2vec.zoo.spec` and :mod:`task2vec.zoo.model2vec`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..defaults import (EMBEDDING_DEFAULTS, EMBEDDING_SETTINGS, LABEL_METHODS as FISHER_METHODS, MODEL2VEC_L2,
                       MODEL2VEC_PARAMETERISATIONS, PROBE, QUALITY_PRIOR_GRID, QUALITY_WEIGHT,
                       RECOMMEND_CHECK as CHECK, RECOMMEND_FISHER_IMAGES as FISHER_IMAGES, RECOMMEND_K,
                       RECOMMEND_MAX_RANK as MAX_RANK, SIZE_PRIOR_GRID,
                       WEIGHTS_ENV)
from ..zoo.cache import zoo_records
from .embed import add_embedding_args
from ..space.distance import ALPHA
from ..embedding.embedding import Embedding
from ..errors import RecordsError, ZooError
from ..io import add_force_flag, check_writable
from ..paths import SHARED_ENV, portable_path, weights_path_problem
from ..space.trivial import trivial_embedding
from ..validate import integer_flag, number_flag

if TYPE_CHECKING:  # the handlers import these (and torch) when they run
    from ..embedding.embed import Task2Vec
    from ..backbones.probe import Probe
    from ..zoo.recommendation import Recommendation
    from ..zoo.zoo import Candidate, Zoo

# Embedding settings a zoo command takes from its flags, else from the zoo, else Task2Vec's defaults.
ZOO_EMBEDDING_FLAGS = EMBEDDING_SETTINGS


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The zoo-recorded embedding settings the user set on the command line (unset ones stay the zoo's)."""
    return {k: getattr(args, k) for k in ZOO_EMBEDDING_FLAGS if getattr(args, k) is not None}


def zoo_embedder(zoo: Zoo, args: argparse.Namespace, probe: Probe) -> Task2Vec:
    """Task2Vec with the flags given, else the zoo's settings, else the defaults."""
    return zoo.embedder(probe, workers=args.workers, max_bad_fraction=args.max_bad_fraction, progress=not args.quiet,
                        noise_target=args.noise_target, round_images=args.round_images,
                        fisher_images=args.fisher_images, **given_settings(args))


def embed_for_zoo(zoo: Zoo, args: argparse.Namespace, dataset: str, name: str | None = None) -> tuple[Embedding, Probe | None]:
    """An embedding file as it is, or a dataset embedded with the zoo's probe."""
    from ..data import load_task
    from ..zoo.zoo import is_embedding_file

    if is_embedding_file(dataset):
        return Embedding.load(dataset), None
    task = load_task(dataset, label_column=args.label_column)  # bad data fails before the probe loads
    probe = zoo.load_probe(args.weights, device=args.device)
    return zoo_embedder(zoo, args, probe).embed(task, name=name), probe


def cmd_zoo_init(args: argparse.Namespace) -> int:
    from ..backbones.probe import Probe
    from ..zoo.zoo import Zoo

    probe = Probe.create(args.probe, weights=args.weights, image_size=args.image_size, random_init=args.random_init)
    zoo = Zoo.create(args.dir, probe.describe(), method=args.method, alpha=args.alpha,
                     quality_weight=args.quality_weight, embedding_settings={"method": args.method})
    print(f"created zoo {zoo.path} for probe {probe.name} ({probe.config.input_size} px, weights {probe.weights_hash})")
    return 0


def cmd_zoo_add(args: argparse.Namespace) -> int:
    from ..zoo.zoo import Zoo, ZooEntry
    from ..zoo.spec import entry_metadata

    zoo = Zoo.load(args.dir)
    if args.id in zoo.ids:
        raise ZooError(f"zoo {str(zoo.path)!r} already has an entry {args.id!r}")
    if args.pretrained and args.checkpoint:
        raise ZooError("give --pretrained or --checkpoint, not both")
    if args.params_m is not None:
        raise ZooError("--params-m is derived from --model (its parameter count), not given")
    checkpoint = args.checkpoint
    if checkpoint and Path(checkpoint).is_absolute():  # under the zoo folder or $TASK2VEC_SHARED: recorded portably
        checkpoint = portable_path(checkpoint, zoo.path)
        if Path(checkpoint).is_absolute():
            raise ZooError(f"--checkpoint {args.checkpoint!r} lies outside the zoo folder and ${SHARED_ENV}: copy it "
                           f"into the zoo folder, or name its folder by a variable (--checkpoint "
                           f"'${{VAR}}/{Path(checkpoint).name}')")
    problem = weights_path_problem(checkpoint) if checkpoint else None
    if problem:
        raise ZooError(f"--checkpoint {checkpoint!r} {problem}")
    meta = {k: v for k, v in (("imagenet_top1", args.imagenet_top1), ("license", args.license),
                              ("notes", args.notes)) if v is not None}
    meta = entry_metadata(args.model, meta, args.input_size, pretrained=args.pretrained)  # before any embedding
    source = args.source_embedding or args.source_dataset
    emb, probe = embed_for_zoo(zoo, args, source, name=args.name or args.id)
    zoo.check_embedding(emb)
    t0 = None
    if zoo.t0 is None:
        t0 = trivial_embedding(emb, probe or zoo.load_probe(args.weights, device=args.device))
    entry = ZooEntry(args.id, args.model, args.pretrained, checkpoint, {"name": args.name} if args.name else {}, meta)
    zoo.add(entry, emb, t0)
    print(f"added {args.id} ({args.model}, source {emb.name}) to {zoo.path}: {len(zoo)} entries")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from ..zoo.zoo import Zoo

    zoo = Zoo.load(args.dir)
    p = zoo.probe
    print(f"zoo {zoo.path}: probe {p['name']} ({p['input_size']} px, weights {p['weights_hash']}), method {zoo.method}, "
          f"alpha {zoo.alpha}, quality weight {zoo.quality_weight}, {len(zoo)} entries"
          + (", MODEL2VEC biases fitted" if zoo.manifest.get("model2vec") else "")
          + (f", always checked: {', '.join(zoo.always_check)}" if zoo.always_check else ""))
    if len(zoo):
        w = max(4, *(len(e.id) for e in zoo.entries))
        print(f"{'id':<{w}}  {'model':<20} {'weights':<12} {'top-1':>6}  source task")
        for e in zoo.entries:
            weights = "pretrained" if e.pretrained else ("checkpoint" if e.checkpoint else "none")
            top1 = e.metadata.get("imagenet_top1")
            print(f"{e.id:<{w}}  {e.model:<20} {weights:<12} {top1 if top1 is not None else '-':>6}  "
                  f"{e.source.get('name', '?')} ({e.source.get('n_classes', '?')} classes, "
                  f"{e.source.get('n_images', '?')} images)")
    return 0


def cmd_zoo_verify(args: argparse.Namespace) -> int:
    from ..zoo.zoo import Zoo

    report = Zoo.verify(args.dir)
    for line in report.problems:
        print(f"problem: {line}")
    for line in report.notes:
        print(f"note: {line}")
    if not report.ok:
        raise ZooError(f"zoo {args.dir}: {len(report.problems)} problem(s) found")
    print(f"zoo {args.dir}: OK ({report.entries} entries)")
    return 0


def cmd_zoo_set(args: argparse.Namespace) -> int:
    from ..zoo.zoo import Zoo

    if args.alpha is None and args.quality_weight is None and args.always_check is None:
        raise ZooError("nothing to set: give --alpha, --quality-weight and/or --always-check")
    zoo = Zoo.load(args.dir)
    had_biases = bool(zoo.manifest.get("model2vec"))
    always = None if args.always_check is None else [i for i in args.always_check.split(",") if i]
    zoo.configure(alpha=args.alpha, quality_weight=args.quality_weight, always_check=always)
    dropped = had_biases and not zoo.manifest.get("model2vec")
    print(f"zoo {zoo.path}: alpha {zoo.alpha}, quality weight {zoo.quality_weight}, always checked: "
          f"{', '.join(zoo.always_check) or 'none'}"
          + ("; MODEL2VEC biases dropped (learned at the old alpha: refit them with 'task2vec zoo fit-model2vec')"
             if dropped else ""))
    return 0


def cmd_zoo_remove(args: argparse.Namespace) -> int:
    from ..zoo.zoo import Zoo

    zoo = Zoo.load(args.dir)
    zoo.remove(args.id)
    print(f"removed {args.id} from {zoo.path}: {len(zoo)} entries")
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from ..zoo.spec import build_zoo

    zoo = build_zoo(args.spec, progress=not args.quiet, train=not args.no_train, ray=args.ray)
    print(f"zoo {zoo.path}: {len(zoo)} entries")
    return 0


def _zoo_records(args: argparse.Namespace) -> tuple[Any, Path, Any]:
    """The zoo of ``args.dir``, its records file (``--records``, else the zoo's in the per-user cache) and the records."""
    from ..zoo.records import read_records
    from ..zoo.zoo import Zoo

    zoo = Zoo.load(args.dir)
    if not len(zoo):
        raise ZooError(f"zoo {str(zoo.path)!r} is empty")
    records = Path(args.records) if args.records is not None else zoo_records(zoo)
    if args.records is None and not records.is_file():
        raise RecordsError(f"zoo {str(zoo.path)!r} has no transfer records yet ({str(records)!r}): fine-tune its "
                           "entries with 'task2vec finetune DATA --model ZOO:ID', or pass --records CSV")
    like = Embedding(zoo.source[0], {"probe": zoo.probe, "method": {"name": zoo.method}})
    return zoo, records, read_records(records, model_ids=zoo.ids, like=like)


def cmd_zoo_fit_model2vec(args: argparse.Namespace) -> int:
    from ..zoo.model2vec import Model2Vec, leave_one_task_out

    zoo, records, rec = _zoo_records(args)
    fit_kw = {"l2": args.l2, "parameterisation": args.parameterisation}
    held_out = leave_one_task_out(zoo.source, rec.task_vectors, rec.arrays(), zoo.t0, zoo.alpha,
                                  layer_sizes=rec.layer_sizes, **fit_kw)
    print(f"leave-one-task-out over {held_out['n_tasks']} tasks (held-out task never in the fit):")
    print(f"{'method':<12} {'rel. error increase':>20} {'regret':>8} {'top-1':>6} {'w. tau':>7}")
    for method, m in held_out["summary"].items():
        print(f"{method:<12} {m['relative_error_increase']:>20.3f} {m['regret']:>8.4f} {m['top1']:>6.2f} "
              f"{m['weighted_tau']:>7.3f}")
    m2v = Model2Vec(zoo.alpha, **fit_kw).fit(zoo.source, rec.task_vectors, rec.arrays(), zoo.t0,
                                            layer_sizes=rec.layer_sizes)
    info = {"records": str(records), "n_records": len(rec), "n_tasks": len(rec.tasks), **fit_kw,
            "temperature": float(m2v.temperature_),
            "held_out": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in held_out["summary"].items()}}
    zoo.set_log_scales(m2v.log_scales_, m2v.group_, info)
    print(f"fitted MODEL2VEC biases on all {len(rec)} records -> {zoo.path}")
    return 0


def cmd_zoo_fit_quality(args: argparse.Namespace) -> int:
    from ..space.distance import asymmetric_scores
    from ..zoo.qualityprior import QualityPrior, leave_one_task_out

    zoo, records, rec = _zoo_records(args)
    d = asymmetric_scores(zoo.model_embeddings(), rec.task_vectors, zoo.t0, zoo.alpha)
    grids = {"quality_weights": args.quality_weights, "size_weights": args.size_weights}
    held = leave_one_task_out(d, zoo.quality_z(), zoo.size_z(), rec.arrays(),
                              current=(zoo.quality_weight, zoo.size_weight), **grids)
    print(f"leave-one-task-out over {held['n_tasks']} tasks (held-out task never in the fit):")
    print(f"{'prior':<10} {'rel. error increase':>20} {'regret':>8} {'top-1':>6} {'w. tau':>7}")
    for method, m in held["summary"].items():
        print(f"{method:<10} {m['relative_error_increase']:>20.3f} {m['regret']:>8.4f} {m['top1']:>6.2f} "
              f"{m['weighted_tau']:>7.3f}")
    prior = QualityPrior(**grids).fit(d, zoo.quality_z(), zoo.size_z(), rec.arrays())
    info = {"records": str(records), "n_records": len(rec), "n_tasks": prior.n_tasks_, "rule": "lowest mean regret "
            "of the pick among each task's recorded models; ties to the weaker prior", **grids,
            "regret": prior.regret_, "held_out": held["summary"]}
    zoo.set_prior(prior.quality_weight_, prior.size_weight_, info)
    print(f"fitted quality weight {prior.quality_weight_:g} and size weight {prior.size_weight_:g} on all "
          f"{len(rec)} records -> {zoo.path}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from ..zoo.recommendation import recommend

    if args.json:
        check_writable(args.json, overwrite=args.force)
    flags = given_settings(args)  # max_rank always has recommend's own default
    rec = recommend(args.dataset, args.zoo, k=args.k, check=args.check, alpha=args.alpha,
                    quality_weight=args.quality_weight, weights=args.weights, device=args.device,
                    label_column=args.label_column, progress=not args.quiet, workers=args.workers,
                    max_bad_fraction=args.max_bad_fraction, fisher_images=args.fisher_images, **flags)
    print(format_recommendation(rec))
    if args.json:
        rec.save(args.json)
    return 0


def format_recommendation(rec: Recommendation) -> str:
    """The ranking as a table: a column only where it carries information, then notes on trust."""
    cands = rec.candidates
    checked = bool(rec.checked)
    head = (f"best backbones for {rec.task} from zoo {rec.zoo} ({rec.n_images} images; "
            + ("checked by LogME on the task, higher is better; then " if checked else "")
            + ("by score, lower is better)" if any(c.quality for c in cands) else "by d_asym, lower is better)"))
    cols: list[tuple[str, str, Callable[[Candidate], str]]] = [
        ("rank", ">", lambda c: str(c.rank)), ("model id", "<", lambda c: c.id),
        ("architecture", "<", lambda c: c.model)]
    if checked:
        cols.append(("LogME", ">", lambda c: "-" if c.evidence is None else f"{c.evidence:.4f}"))
    if any(c.quality for c in cands):
        cols.append(("score", ">", lambda c: f"{c.score:.4f}"))
    cols.append(("d_asym", ">", lambda c: f"{c.distance:.4f}"))
    if any(abs(c.bias) >= 5e-5 for c in cands):
        cols.append(("bias", ">", lambda c: f"{c.bias:+.4f}"))
    if any(c.quality for c in cands):
        cols.append(("quality", ">", lambda c: f"{c.quality:+.4f}"))
    if len({c.params_m for c in cands}) > 1:
        cols.append(("params", ">", lambda c: "-" if c.params_m is None else f"{c.params_m:.1f}M"))
    if len({c.input_size for c in cands}) > 1:
        cols.append(("px", ">", lambda c: str(c.input_size or "-")))
    cols.append(("weights", "<", lambda c: c.weights.status))
    if any(c.stable is not None for c in cands):
        cols.append(("stable", "<", lambda c: "-" if c.stable is None else "yes" if c.stable else "no"))
    if any(c.tied for c in cands):
        cols.append(("tied", "<", lambda c: "yes" if c.tied else ""))
    cols.append(("why", "<", lambda c: c.why()))
    cells = [[fn(c) for _, _, fn in cols] for c in cands]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, (name, _, _) in enumerate(cols)]
    fmt = lambda row: "  ".join(f"{v:{a}{w}}" for v, (_, a, _), w in zip(row, cols, widths)).rstrip()  # noqa: E731
    lines = [head, fmt([name for name, _, _ in cols]), *(fmt(row) for row in cells)]
    tied = [c for c in cands if c.tied]
    if len(tied) > 1 and rec.noise is not None:
        lines.append(f"note: {', '.join(c.id for c in tied)} score within the task's noise ({rec.noise:.3f}, from "
                     "two halves of its images) of the best: the embedding alone cannot order them"
                     + ("" if checked else "; --check N runs the first N sources' entries on the images"))
    unstable = [c.id for c in cands if c.stable is False]
    if unstable:
        lines.append(f"note: {', '.join(unstable)} {'leaves' if len(unstable) == 1 else 'leave'} the top {len(cands)} "
                     "under one half of the images")
    if rec.skipped:
        lines.append(f"note: not checked, weights not here: {', '.join(rec.skipped)} (task2vec zoo build fetches "
                     "or trains them)")
    return "\n".join(lines)


def add_zoo_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `zoo ...` and `recommend` on the top-level sub-parsers; their embedding flags default to
    the zoo's settings."""
    def embedding_flags(p: argparse.ArgumentParser, **defaults: Any) -> None:
        add_embedding_args(p, probe_flags=False, zoo_settings=True, defaults=defaults)  # the rest: the zoo's settings
        p.add_argument("--weights", metavar="FILE", help=f"the zoo's probe weights (default: ${WEIGHTS_ENV} lookup)")

    zp = sub.add_parser("zoo", help="create and edit a zoo of candidate models",
                        description="A zoo: candidate models with the embeddings of their source tasks.")
    zsub = zp.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")

    p = zsub.add_parser("init", help="create an empty zoo for a probe")
    p.add_argument("dir")
    p.add_argument("--probe", default=PROBE, help="probe network, as for 'task2vec embed'")
    p.add_argument("--weights", metavar="FILE", help=f"probe weights (default: ${WEIGHTS_ENV} lookup, then download)")
    p.add_argument("--image-size", type=integer_flag(), metavar="PX", help="override the probe's input resolution "
                                                                "(default: the probe's own)")
    p.add_argument("--random-init", action="store_true", help="random probe weights (for testing only)")
    p.add_argument("--method", choices=FISHER_METHODS, default=EMBEDDING_DEFAULTS["method"],
                   help="the Fisher method of the zoo's embeddings")
    p.add_argument("--alpha", type=number_flag(low=0), default=ALPHA, help="weight of the source-complexity term")
    p.add_argument("--quality-weight", type=number_flag(low=0), default=QUALITY_WEIGHT,
                   help="weight of standardised ImageNet top-1 in the score")
    p.set_defaults(func=cmd_zoo_init)

    p = zsub.add_parser("add", help="add a model: its architecture, weights and source task")
    p.add_argument("dir")
    p.add_argument("--id", required=True, help="the new entry's id (letters, digits, . _ + -)")
    p.add_argument("--model", required=True, help="timm or torchvision architecture name")
    p.add_argument("--checkpoint", metavar="FILE|URI",
                   help="fine-tuned weights: a path relative to the zoo folder and inside it, '${VAR}/...', an absolute "
                        f"path under the zoo folder or ${SHARED_ENV} (recorded relative to it), or a URI")
    p.add_argument("--pretrained", action="store_true", help="the library's own pretrained weights")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source-dataset", metavar="DIR|CSV", help="the dataset the model was trained on (embedded now)")
    src.add_argument("--source-embedding", metavar="EMB.npz", help="an existing embedding of the source task")
    p.add_argument("--name", help="source task name (default: the id)")
    p.add_argument("--params-m", help=argparse.SUPPRESS)  # derived from --model: refused
    p.add_argument("--input-size", type=integer_flag(), metavar="PX",
                   help="resolution the weights were trained at (default: the architecture's own)")
    p.add_argument("--imagenet-top1", type=number_flag(), metavar="ACC",
                   help="ImageNet top-1 accuracy (default: from the published tables when known, for --pretrained)")
    p.add_argument("--license", help="the weights' license (default: not recorded)")
    p.add_argument("--notes", help="free text kept with the entry")
    embedding_flags(p)
    p.set_defaults(func=cmd_zoo_add)

    p = zsub.add_parser("list", help="list the entries")
    p.add_argument("dir")
    p.set_defaults(func=cmd_zoo_list)

    p = zsub.add_parser("verify", help="check a zoo: its manifest's checksum and fields, its arrays, its weights files",
                        description="Check a zoo folder as 'zoo list' and 'recommend' load it, and report every "
                                    "problem, one line each (a hand-edited manifest, a field out of range, arrays "
                                    "that do not match), then notes (a weights file not built or fetched yet). Exit "
                                    "code 0 when the zoo is sound, 2 when a problem is found.")
    p.add_argument("dir")
    p.set_defaults(func=cmd_zoo_verify)

    p = zsub.add_parser("set", help="change the ranking's alpha, quality weight or always-checked entries")
    p.add_argument("dir")
    p.add_argument("--alpha", type=number_flag(low=0), help="weight of the source-complexity term (default: unchanged)")
    p.add_argument("--quality-weight", type=number_flag(low=0), help="weight of standardised ImageNet top-1 (default: unchanged)")
    p.add_argument("--always-check", metavar="ID,ID",
                   help="entries recommend's check scores whatever their rank ('' clears; default: unchanged)")
    p.set_defaults(func=cmd_zoo_set)

    p = zsub.add_parser("remove", help="remove an entry")
    p.add_argument("dir")
    p.add_argument("--id", required=True, help="the entry to remove")
    p.set_defaults(func=cmd_zoo_remove)

    p = zsub.add_parser("build", help="build or complete a zoo from a YAML spec (resumable)")
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("--no-train", action="store_true",
                   help="add entries whose expert checkpoint is missing without training it (a later build trains it)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="train the experts and embed the sources as Ray tasks, on the cluster at ADDRESS (without "
                        "one: a local Ray on this machine); needs pip install 'task2vec[distributed]'")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_zoo_build)

    p = zsub.add_parser("fit-model2vec", help="learn MODEL2VEC biases from transfer records",
                        description="Fit per-model biases from records (CSV: task, model, error|accuracy), "
                                    "print their leave-one-task-out selection quality, and store them in the zoo.")
    p.add_argument("dir")
    p.add_argument("--records", metavar="CSV",
                   help="the records (default: the zoo's in the per-user cache, where 'task2vec finetune' of its "
                        "entries appends them)")
    p.add_argument("--l2", type=number_flag(), default=MODEL2VEC_L2, help="pull of the biases toward 0")
    p.add_argument("--parameterisation", choices=MODEL2VEC_PARAMETERISATIONS, default=MODEL2VEC_PARAMETERISATIONS[0],
                   help="one bias scale per model and layer, or per model and filter")
    p.set_defaults(func=cmd_zoo_fit_model2vec)

    p = zsub.add_parser("fit-quality", help="learn the ranking's ImageNet-quality and size weights from transfer records",
                        description="Choose quality_weight and size_weight on a grid by the regret of the pick over the "
                                    "records' tasks, print the choice's leave-one-task-out figures, and store it in the zoo.")
    p.add_argument("dir")
    p.add_argument("--records", metavar="CSV", help="the records (default: the zoo's in the per-user cache)")
    p.add_argument("--quality-weights", type=number_flag(), nargs="+", default=list(QUALITY_PRIOR_GRID), metavar="W",
                   help=f"the quality weights tried (default: {' '.join(map(str, QUALITY_PRIOR_GRID))})")
    p.add_argument("--size-weights", type=number_flag(), nargs="+", default=list(SIZE_PRIOR_GRID), metavar="W",
                   help=f"the size weights tried (default: {' '.join(map(str, SIZE_PRIOR_GRID))})")
    p.set_defaults(func=cmd_zoo_fit_quality)

    p = sub.add_parser("recommend", help="rank a zoo's models for a dataset",
                       description="Rank the zoo's candidate backbones for a dataset (or an embedding file) by the "
                                   "asymmetric Task2Vec distance, MODEL2VEC biases and ImageNet quality.")
    p.add_argument("dataset", help="ImageFolder directory, CSV, or an embedding .npz")
    p.add_argument("--zoo", required=True, metavar="DIR", help="the zoo folder")
    p.add_argument("-k", type=integer_flag(), default=RECOMMEND_K, help="how many to show")
    p.add_argument("--json", metavar="OUT.json", help="also write the ranking as JSON")
    add_force_flag(p)
    p.add_argument("--alpha", type=number_flag(low=0), help="override the zoo's alpha (default: the zoo's setting)")
    p.add_argument("--quality-weight", type=number_flag(low=0),
                   help="override the zoo's quality weight (default: the zoo's setting)")
    p.add_argument("--check", type=integer_flag(), default=CHECK, metavar="N",
                   help="run the entries of the first N source tasks (every architecture trained on each) and the "
                        "zoo's always-checked entries (zoo set --always-check) over "
                        "the dataset (one forward pass each; entries whose weights are not here are skipped with a "
                        "warning) and re-rank them, with the zoo's entry that is the probe (free), by LogME; 0: no "
                        "check (default: %(default)s, the benchmark's best)")
    embedding_flags(p, max_rank=MAX_RANK, fisher_images=FISHER_IMAGES)
    p.set_defaults(func=cmd_recommend)

