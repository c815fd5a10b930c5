"""The zoo commands of the CLI (`task2vec zoo ...`, `task2vec recommend`): a thin layer over
:mod:`task2vec.zoo`, :mod:`task2vec.zoospec` and :mod:`task2vec.model2vec`."""

from __future__ import annotations

import argparse
import json

from .data import load_task
from .distance import ALPHA
from .embed import Task2Vec
from .embedding import Embedding
from .errors import ZooError
from .evidence import EvidenceCheck
from .io import atomic_open, check_writable
from .model2vec import Model2Vec, leave_one_task_out, read_records
from .probe import Probe
from .trivial import trivial_embedding
from .zoo import EMBEDDING_SETTINGS, FISHER_METHODS, QUALITY_WEIGHT, Zoo, ZooEntry, is_embedding_file
from .zoospec import build_zoo, entry_metadata

# Embedding settings a zoo command takes from its flags, else from the zoo, else Task2Vec's defaults.
ZOO_EMBEDDING_FLAGS = EMBEDDING_SETTINGS


def zoo_probe(zoo: Zoo, args: argparse.Namespace) -> Probe:
    """The zoo's own probe; refuses weights whose hash differs from the zoo's."""
    p = zoo.probe
    probe = Probe.create(p["name"], weights=args.weights, image_size=p["input_size"], device=args.device)
    if probe.weights_hash != p["weights_hash"]:
        raise ZooError(f"probe weights {probe.weights_hash} ({probe.weights_source}) are not the zoo's "
                       f"({p['weights_hash']}); pass the zoo's probe weights with --weights")
    return probe


def zoo_embedder(zoo: Zoo, args: argparse.Namespace, probe: Probe) -> Task2Vec:
    """Task2Vec with the flags given, else the zoo's settings, else the defaults."""
    flags = {k: getattr(args, k) for k in ZOO_EMBEDDING_FLAGS if getattr(args, k) is not None}
    return zoo.embedder(probe, workers=args.workers, max_bad_fraction=args.max_bad_fraction, progress=not args.quiet,
                        **flags)


def embed_for_zoo(zoo: Zoo, args: argparse.Namespace, dataset: str, name: str | None = None) -> tuple[Embedding, Probe | None]:
    """An embedding file as it is, or a dataset embedded with the zoo's probe."""
    if is_embedding_file(dataset):
        return Embedding.load(dataset), None
    task = load_task(dataset, label_column=args.label_column)  # bad data fails before the probe loads
    probe = zoo_probe(zoo, args)
    return zoo_embedder(zoo, args, probe).embed(task, name=name), probe


def cmd_zoo_init(args: argparse.Namespace) -> int:
    probe = Probe.create(args.probe, weights=args.weights, image_size=args.image_size, random_init=args.random_init)
    zoo = Zoo.create(args.dir, probe.describe(), method=args.method, alpha=args.alpha,
                     quality_weight=args.quality_weight, embedding_settings={"method": args.method})
    print(f"created zoo {zoo.path} for probe {probe.name} ({probe.config.input_size} px, weights {probe.weights_hash})")
    return 0


def cmd_zoo_add(args: argparse.Namespace) -> int:
    zoo = Zoo.load(args.dir)
    if args.id in zoo.ids:
        raise ZooError(f"zoo {str(zoo.path)!r} already has an entry {args.id!r}")
    if args.pretrained and args.checkpoint:
        raise ZooError("give --pretrained or --checkpoint, not both")
    if args.params_m is not None:
        raise ZooError("--params-m is derived from --model (its parameter count), not given")
    meta = {k: v for k, v in (("imagenet_top1", args.imagenet_top1), ("license", args.license),
                              ("notes", args.notes)) if v is not None}
    meta = entry_metadata(args.model, meta, args.input_size, pretrained=args.pretrained)  # before any embedding
    source = args.source_embedding or args.source_dataset
    emb, probe = embed_for_zoo(zoo, args, source, name=args.name or args.id)
    zoo.check_embedding(emb)
    t0 = None
    if zoo.t0 is None:
        t0 = trivial_embedding(emb, probe or zoo_probe(zoo, args))
    entry = ZooEntry(args.id, args.model, args.pretrained, args.checkpoint, {"name": args.name} if args.name else {},
                     meta)
    zoo.add(entry, emb, t0)
    print(f"added {args.id} ({args.model}, source {emb.name}) to {zoo.path}: {len(zoo)} entries")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    zoo = Zoo.load(args.dir)
    p = zoo.probe
    print(f"zoo {zoo.path}: probe {p['name']} ({p['input_size']} px, weights {p['weights_hash']}), method {zoo.method}, "
          f"alpha {zoo.alpha}, quality weight {zoo.quality_weight}, {len(zoo)} entries"
          + (", MODEL2VEC biases fitted" if zoo.manifest.get("model2vec") else ""))
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


def cmd_zoo_remove(args: argparse.Namespace) -> int:
    zoo = Zoo.load(args.dir)
    zoo.remove(args.id)
    print(f"removed {args.id} from {zoo.path}: {len(zoo)} entries")
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    zoo = build_zoo(args.spec, progress=not args.quiet)
    print(f"zoo {zoo.path}: {len(zoo)} entries")
    return 0


def cmd_zoo_fit_model2vec(args: argparse.Namespace) -> int:
    zoo = Zoo.load(args.dir)
    if not len(zoo):
        raise ZooError(f"zoo {str(zoo.path)!r} is empty")
    like = Embedding(zoo.source[0], {"probe": zoo.probe, "method": {"name": zoo.method}})
    rec = read_records(args.records, model_ids=zoo.ids, like=like)
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
    info = {"records": str(args.records), "n_records": len(rec), "n_tasks": len(rec.tasks), **fit_kw,
            "temperature": float(m2v.temperature_),
            "held_out": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in held_out["summary"].items()}}
    zoo.set_log_scales(m2v.log_scales_, m2v.group_, info)
    print(f"fitted MODEL2VEC biases on all {len(rec)} records -> {zoo.path}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    if args.json:
        check_writable(args.json)
    zoo = Zoo.load(args.zoo)
    if not len(zoo):
        raise ZooError(f"zoo {str(zoo.path)!r} is empty: add models with 'task2vec zoo add'")
    check = EvidenceCheck(args.check) if args.check else None  # bad values fail before any embedding
    if check is None:
        emb, _ = embed_for_zoo(zoo, args, args.dataset)
        recs = zoo.recommend(emb, k=args.k, alpha=args.alpha, quality_weight=args.quality_weight)
    else:  # the check needs the images and the embedder's features, not only the embedding
        if is_embedding_file(args.dataset):
            raise ZooError("--check needs the dataset's images, not an embedding file")
        task = load_task(args.dataset, label_column=args.label_column)
        embedder = zoo_embedder(zoo, args, zoo_probe(zoo, args))
        emb = embedder.embed(task)
        ranking = zoo.recommend(emb, k=len(zoo), alpha=args.alpha, quality_weight=args.quality_weight)
        recs = check.fit(zoo, ranking, task, embedder).rerank(ranking)[:args.k]
    print(f"best backbones for {emb.name} from zoo {zoo.path} ({len(zoo)} candidates; lower score is better"
          + (f"; the first {len(check.evidence_)} re-ranked by LogME, higher is better)" if check else ")"))
    w = max(5, *(len(r.id) for r in recs))
    print(f"{'rank':>4}  {'model id':<{w}}  {'architecture':<18} {'score':>7} {'d_asym':>7} {'bias':>7} {'quality':>7} "
          + (f"{'LogME':>7} " if check else "") + f"{'params':>7} {'px':>4}  why")
    for r in recs:
        params = f"{r.params_m:.1f}M" if isinstance(r.params_m, (int, float)) else "-"
        logme = "" if check is None else f"{r.evidence:>7.4f} " if r.evidence is not None else f"{'-':>7} "
        print(f"{r.rank:>4}  {r.id:<{w}}  {r.model:<18} {r.score:>7.4f} {r.asymmetric:>7.4f} {r.bias_effect:>+7.4f} "
              f"{r.quality_effect:>+7.4f} {logme}{params:>7} {r.input_size or '-':>4}  {r.why()}")
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({"task": emb.name, "zoo": str(zoo.path), "alpha": zoo.alpha if args.alpha is None else args.alpha,
                       "checked": check.top if check else 0, "recommendations": [r.as_dict() for r in recs]},
                      f, indent=1)
            f.write("\n")
    return 0


def add_zoo_parsers(sub: argparse._SubParsersAction, add_embedding_args) -> None:
    """Register `zoo ...` and `recommend` on the top-level sub-parsers."""
    def embedding_flags(p: argparse.ArgumentParser) -> None:
        add_embedding_args(p, probe_flags=False)
        p.add_argument("--weights", metavar="FILE", help="the zoo's probe weights (default: $TASK2VEC_WEIGHTS lookup)")
        p.set_defaults(**{k: None for k in ZOO_EMBEDDING_FLAGS})  # unset flags fall back to the zoo's settings

    zp = sub.add_parser("zoo", help="create and edit a zoo of candidate models",
                        description="A zoo: candidate models with the embeddings of their source tasks.")
    zsub = zp.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")

    p = zsub.add_parser("init", help="create an empty zoo for a probe")
    p.add_argument("dir")
    p.add_argument("--probe", default="mobilenet_v2")
    p.add_argument("--weights", metavar="FILE", help="probe weights (default: $TASK2VEC_WEIGHTS lookup, then download)")
    p.add_argument("--image-size", type=int, metavar="PX")
    p.add_argument("--random-init", action="store_true", help="random probe weights (for testing only)")
    p.add_argument("--method", choices=FISHER_METHODS, default="exact")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"weight of the source-complexity term (default {ALPHA})")
    p.add_argument("--quality-weight", type=float, default=QUALITY_WEIGHT,
                   help=f"weight of standardised ImageNet top-1 in the score (default {QUALITY_WEIGHT})")
    p.set_defaults(func=cmd_zoo_init)

    p = zsub.add_parser("add", help="add a model: its architecture, weights and source task")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--model", required=True, help="timm or torchvision architecture name")
    p.add_argument("--checkpoint", metavar="FILE|URI", help="fine-tuned weights")
    p.add_argument("--pretrained", action="store_true", help="the library's own pretrained weights")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source-dataset", metavar="DIR|CSV", help="the dataset the model was trained on (embedded now)")
    src.add_argument("--source-embedding", metavar="EMB.npz", help="an existing embedding of the source task")
    p.add_argument("--name", help="source task name (default: the id)")
    p.add_argument("--params-m", help=argparse.SUPPRESS)  # derived from --model: refused
    p.add_argument("--input-size", type=int, metavar="PX",
                   help="resolution the weights were trained at (default: the architecture's own)")
    p.add_argument("--imagenet-top1", type=float, metavar="ACC", help="default: from the published tables when known")
    p.add_argument("--license")
    p.add_argument("--notes")
    embedding_flags(p)
    p.set_defaults(func=cmd_zoo_add)

    p = zsub.add_parser("list", help="list the entries")
    p.add_argument("dir")
    p.set_defaults(func=cmd_zoo_list)

    p = zsub.add_parser("remove", help="remove an entry")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.set_defaults(func=cmd_zoo_remove)

    p = zsub.add_parser("build", help="build or complete a zoo from a YAML spec (resumable)")
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_zoo_build)

    p = zsub.add_parser("fit-model2vec", help="learn MODEL2VEC biases from transfer records",
                        description="Fit per-model biases from records (CSV: task, model, error|accuracy), "
                                    "print their leave-one-task-out selection quality, and store them in the zoo.")
    p.add_argument("dir")
    p.add_argument("--records", required=True, metavar="CSV")
    p.add_argument("--l2", type=float, default=0.1, help="pull of the biases toward 0 (default 0.1)")
    p.add_argument("--parameterisation", choices=("layer", "filter"), default="layer")
    p.set_defaults(func=cmd_zoo_fit_model2vec)

    p = sub.add_parser("recommend", help="rank a zoo's models for a dataset",
                       description="Rank the zoo's candidate backbones for a dataset (or an embedding file) by the "
                                   "asymmetric Task2Vec distance, MODEL2VEC biases and ImageNet quality.")
    p.add_argument("dataset", help="ImageFolder directory, CSV, or an embedding .npz")
    p.add_argument("--zoo", required=True, metavar="DIR")
    p.add_argument("-k", type=int, default=5, help="how many to show (default 5)")
    p.add_argument("--json", metavar="OUT.json", help="also write the ranking as JSON")
    p.add_argument("--alpha", type=float, help="override the zoo's alpha")
    p.add_argument("--quality-weight", type=float, help="override the zoo's quality weight")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="run the first N picks over the dataset (one forward pass each; their weights must be "
                        "local) and re-rank them, with the zoo's entry that is the probe (free), by LogME: the "
                        "pick the model-selection benchmark measures best is --check 1 (default 0: no check)")
    embedding_flags(p)
    p.set_defaults(func=cmd_recommend)

