"""The fine-tuning commands of the CLI (`task2vec finetune`, `predict`, `cam`): a thin layer over
:mod:`task2vec.finetune.trainer` and :mod:`task2vec.finetune.cam`."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..finetune.augment_config import AUTO_AUGMENT, PRESETS, preset
from ..zoo.cache import zoo_cache_dir, zoo_records
from .zoo import ZOO_EMBEDDING_FLAGS, embed_for_zoo
from ..defaults import BALANCE, EMBEDDING_DEFAULTS, FINETUNE_DEFAULTS as _D, FREEZE_HELP, PREDICT_TOPK, WEIGHTS_ENV
from ..errors import FinetuneError, ImageError, WeightsError
from ..io import add_force_flag, atomic_open, check_writable
from ..validate import integer_flag, number_flag, seed_flag

if TYPE_CHECKING:  # the handlers import these (and torch) when they run
    from ..finetune.trainer import FitResult, RepeatsResult
    from ..backbones.models import ModelChoice

# explicit augmentation flags: CLI flag -> AugmentConfig field (each overrides the preset's value)
_AUG_FLAGS = {"hflip": float, "vflip": float, "rotate": float, "zoom": float, "color_jitter": float,
              "auto_augment": str, "erasing": float, "mixup": float, "cutmix": float, "mix_prob": float,
              "mobius": float, "mobius_strength": float}


def _record_target(args: argparse.Namespace, choice: ModelChoice) -> tuple[Path | None, Path | None]:
    """Where the transfer record goes and the task embedding it names.

    A zoo entry's record goes to ``--records`` or to the zoo's file in the per-user cache
    (:mod:`task2vec.zoo.cache`), never into the zoo folder; without ``--embedding`` the dataset is
    embedded with the zoo's probe, cached beside the zoo's records in ``tasks/``.
    """
    from ..data import load_task
    from ..distributed import is_main
    from ..zoo.zoo import Zoo

    if args.no_records:
        return None, None
    zoo = Zoo.load(choice.zoo) if choice.zoo else None
    if args.records:
        records = Path(args.records)
    elif zoo is not None:
        records = zoo_records(zoo, create=True)
    else:
        if args.embedding is not None:
            raise FinetuneError("--embedding names the task for a transfer record: give --records CSV too")
        return None, None
    check_writable(records)
    if args.embedding is not None:
        if not Path(args.embedding).is_file():
            raise FinetuneError(f"--embedding {args.embedding!r} does not exist")
        return records, Path(args.embedding)
    if zoo is None:
        raise FinetuneError("--records needs the task's embedding: pass --embedding EMB.npz")
    task = load_task(args.dataset, label_column=args.label_column)
    cached = zoo_cache_dir(zoo, create=True) / "tasks" / f"{task.fingerprint()[:16]}.t2v.npz"
    if not cached.is_file():
        settings = argparse.Namespace(weights=None, device=args.device, workers=args.workers, max_bad_fraction=0.05,
                                      quiet=args.quiet, label_column=args.label_column,
                                      noise_target=EMBEDDING_DEFAULTS["noise_target"],
                                      round_images=EMBEDDING_DEFAULTS["round_images"],
                                      fisher_images=EMBEDDING_DEFAULTS["fisher_images"],
                                      **{k: None for k in ZOO_EMBEDDING_FLAGS})
        try:
            emb, _ = embed_for_zoo(zoo, settings, args.dataset, name=Path(args.dataset).name)
        except WeightsError as exc:
            raise FinetuneError(f"the transfer record for zoo {str(zoo.path)!r} needs the task embedded with the zoo's "
                                f"probe ({exc}); or pass --embedding EMB.npz or --no-records") from None
        if is_main():
            emb.save(cached)
    return records, cached


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..distributed import init_from_env, is_main
    from ..finetune.trainer import RepeatsResult, Trainer, fit
    from ..zoo.records import append_transfer_record
    from ..zoo.resolve import resolve_model

    overrides = {k: getattr(args, k) for k in _AUG_FLAGS if getattr(args, k) is not None}
    try:
        augment = dataclasses.replace(preset(args.augment), **overrides)
    except TypeError as exc:
        raise FinetuneError(str(exc)) from None
    choice = resolve_model(args.model, weights=args.weights, zoo=args.zoo)
    # every Trainer hyperparameter with a flag of the same name takes it; the rest are set here
    flags = vars(args)
    settings = {name: flags[name] for name in inspect.signature(Trainer).parameters if name in flags}
    settings.update(model=choice, augment=augment, amp=not args.no_amp, progress=not args.quiet,
                    aux_columns=args.aux_columns.split(",") if args.aux_columns else None,
                    device=init_from_env(args.device))
    Trainer(**settings)  # every setting checked before the task is embedded for its record
    records, embedding = _record_target(args, choice)  # before training: a bad records setting fails first
    result = fit(args.dataset, args.output, repeats=args.repeats, resume=args.resume, overwrite=args.force,
                 **settings)
    if not is_main():
        return 0  # rank 0 alone reports and appends the record
    runs = result.runs if isinstance(result, RepeatsResult) else [result]
    _print_run(runs[0] if len(runs) == 1 else None, result)
    if records is not None and not args.overfit_batch:
        path = append_transfer_record(runs, records=records, embedding=embedding)
        print(f"transfer record appended to {path} (task embedding {embedding})")
    return 0


def _print_run(run: FitResult | None, result: FitResult | RepeatsResult) -> None:
    """One run's validation (and test) figures, or the mean ± std over the repeats."""
    if run is not None:
        val = run.val
        top = ", ".join(f"top-{k} {v:.4f}" for k, v in val["topk"].items() if str(k) != "1")
        print(f"{run.run_dir}: best epoch {run.best_epoch}/{run.epochs_run}, val accuracy {val['accuracy']:.4f}"
              f" (balanced {val['balanced_accuracy']:.4f}{', ' + top if top else ''}), {run.seconds:.0f} s")
        if run.test is not None:
            print(f"test accuracy {run.test['accuracy']:.4f} on {run.test['n_samples']} images")
        pairs = [p for p in val.get("most_confused", []) if p[2] > 0][:3]
        if pairs:
            print("most confused: " + "; ".join(f"{t} -> {p} ({n})" for t, p, n, _ in pairs))
        return
    s = result.summary
    line = f"{s['seeds']} seeds: val accuracy {s['val']['mean']['accuracy']:.4f} ± {s['val']['std']['accuracy']:.4f}"
    if "test" in s:
        line += f"; test accuracy {s['test']['mean']['accuracy']:.4f} ± {s['test']['std']['accuracy']:.4f}"
    print(line)


def _images(paths: list[str]) -> list:
    """The images at ``paths``, RGB; an unreadable one (corrupt, or over the pixel limits) is an ImageError."""
    from ..data import IMAGE_ERRORS, image_problem, load_rgb

    out = []
    for p in paths:
        try:
            out.append(load_rgb(p))
        except IMAGE_ERRORS as exc:
            raise ImageError(f"cannot read image {p!r}: {image_problem(exc)}") from None
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from ..finetune.inference import FinetunedModel

    if args.json:
        check_writable(args.json, overwrite=args.force)
    model = FinetunedModel.load(args.checkpoint, device=args.device)
    preds = model.predict(_images(args.images), topk=args.topk)
    rows = []
    for path, pred in zip(args.images, preds):
        print(f"{path}  " + "  ".join(f"{c} {p:.3f}" for c, p in pred))
        rows.append({"image": path, "top": [{"class": c, "probability": p} for c, p in pred]})
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({"checkpoint": str(args.checkpoint), "predictions": rows}, f, indent=1)
            f.write("\n")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    from ..finetune import cam as cam_mod
    from ..finetune.inference import FinetunedModel

    check_writable(args.output, overwrite=args.force)
    model = FinetunedModel.load(args.checkpoint, device=args.device)
    class_idx = None
    if args.target_class is not None:
        if args.target_class not in model.classes:
            raise FinetuneError(f"unknown class {args.target_class!r}: the model's classes are {', '.join(model.classes)}")
        class_idx = model.classes.index(args.target_class)
    images = _images(args.images)
    res = cam_mod.grad_cam(model.model, model.preprocess(images), class_idx=class_idx, layer=args.layer)
    shown = [model.transform(im) for im in images]  # the model's view: resized and centre-cropped
    cam_mod.save_cam_figure(shown, res.maps, res.titles(model.classes), args.output)
    for path, title in zip(args.images, res.titles(model.classes)):
        print(f"{path}: {title}")
    print(f"Grad-CAM of layer {res.layer} -> {args.output}")
    return 0


def add_finetune_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `finetune`, `predict` and `cam` on the top-level sub-parsers."""
    p = sub.add_parser("finetune", help="fine-tune a backbone on a dataset",
                       description="Fine-tune a pretrained backbone (or a zoo entry or the top recommendation).")
    p.add_argument("dataset", help="ImageFolder (train/ val/ test/ kept when present) or CSV")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                   help="run folder (created; a folder holding a run is refused unless --resume or --force)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=_D["model"],
                   help="timm/torchvision name, ZOO_DIR:ID, an id with --zoo, or a 'recommend --json' file (top entry)")
    g.add_argument("--weights", metavar="FILE", help=f"weights for the model (default: ${WEIGHTS_ENV}, then a download)")
    g.add_argument("--zoo", metavar="DIR", help="read --model as an entry id of this zoo")
    g.add_argument("--random-init", action="store_true", help="train from random weights (a baseline)")
    g.add_argument("--image-size", type=integer_flag(), metavar="PX",
                   help="training resolution (default: the input size of a zoo entry or recommendation, else the "
                        "architecture's)")
    g.add_argument("--dropout", type=number_flag(), default=_D["dropout"], help="dropout before the classifier")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=integer_flag(), default=_D["epochs"], help="training epochs (fewer with --patience)")
    g.add_argument("--batch-size", type=integer_flag(), default=_D["batch_size"], help="images per step")
    g.add_argument("--lr", type=number_flag(), default=_D["lr"], help="classifier learning rate (AdamW)")
    g.add_argument("--body-lr", type=number_flag(), default=_D["body_lr"], help="body rate as a fraction of --lr (0 freezes)")
    g.add_argument("--weight-decay", type=number_flag(), default=_D["weight_decay"], help="AdamW weight decay")
    g.add_argument("--warmup-epochs", type=number_flag(), default=_D["warmup_epochs"],
                   help="linear warm-up of the learning rates, in epochs, before the cosine decay")
    g.add_argument("--label-smoothing", type=number_flag(), default=_D["label_smoothing"],
                   help="label smoothing of the cross-entropy")
    g.add_argument("--grad-clip", type=number_flag(), default=_D["grad_clip"], help="max gradient norm (0: off)")
    g.add_argument("--patience", type=integer_flag(), default=_D["patience"],
                   help="early stopping: epochs without val improvement (0: off)")
    g.add_argument("--freeze", default=_D["freeze"], help=FREEZE_HELP)
    g.add_argument("--train-bn", action="store_true", default=None,
                   help="update BatchNorm statistics (default: frozen for pretrained weights, trained for --random-init)")
    g.add_argument("--balance", choices=BALANCE, default=_D["balance"], help="class rebalancing")
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    g = p.add_argument_group("augmentation (a preset, then single overrides)")
    g.add_argument("--augment", choices=list(PRESETS), default=_D["augment"], help="the preset")
    preset_value = " (default: the preset's)"
    overrides = (  # flag, metavar, what it sets; each defaults to the preset's value
        ("--hflip", "P", "horizontal flip probability"), ("--vflip", "P", "vertical flip probability"),
        ("--rotate", "DEG", "maximum rotation in degrees"),
        ("--zoom", "S", "smallest crop area of RandomResizedCrop (1: none)"),
        ("--color-jitter", "X", "brightness/contrast/saturation strength"),
        ("--erasing", "P", "random erasing (cutout) probability"),
        ("--mixup", "ALPHA", "mixup Beta(α, α) (0: off)"), ("--cutmix", "ALPHA", "cutmix Beta(α, α) (0: off)"),
        ("--mix-prob", "P", "probability that a batch is mixed"),
        ("--mobius", "P", "probability of a random Möbius map per image"),
        ("--mobius-strength", "S", "size of the Möbius maps (see task2vec.finetune.mobius)"),
    )
    for flag, metavar, text in overrides:
        g.add_argument(flag, type=number_flag(), metavar=metavar, help=text + preset_value)
    g.add_argument("--auto-augment", choices=AUTO_AUGMENT, help="TrivialAugment, RandAugment or none" + preset_value)
    g = p.add_argument_group("multi-task heads (training only)")
    g.add_argument("--aux-labels", metavar="CSV", help="auxiliary targets per image (path column) or per class")
    g.add_argument("--aux-columns", metavar="A,B", help="which CSV columns (default: all but the keys)")
    g.add_argument("--aux-weight", type=number_flag(), default=_D["aux_weight"], help="λ of the auxiliary losses")
    g.add_argument("--groups", metavar="JSON", help="superclasses: {group: [class, ...]}")
    g.add_argument("--group-weight", type=number_flag(), default=_D["group_weight"], help="λ of the superclass loss")
    g = p.add_argument_group("run")
    g.add_argument("--val-fraction", type=number_flag(), default=_D["val_fraction"],
                   help="held-out share when the data has no val/ split")
    g.add_argument("--label-column", metavar="COL",
                   help="label column of a CSV dataset (default: 'label', or the only column besides the path)")
    g.add_argument("--repeats", type=integer_flag(), default=_D["repeats"], metavar="R",
                   help="train R seeds and report mean ± std")
    g.add_argument("--overfit-batch", type=integer_flag(), default=0, metavar="N",
                   help="train on one batch of N images, a check (0: off)")
    g.add_argument("--max-train-images", type=integer_flag(), metavar="N",
                   help="train on a class-balanced subset of N images (default: the whole training split)")
    again = g.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in RUN_DIR from last.pt: a run that had stopped is not trained further, "
                            "one without a checkpoint yet (killed in its first epoch) starts from the beginning")
    again.add_argument("--force", action="store_true", help="replace the run in RUN_DIR (default: refuse)")
    g.add_argument("--seed", type=seed_flag(), default=_D["seed"], help="random seed (split, initialisation, batches)")
    g.add_argument("--device", default=_D["device"], help="auto (CUDA when present), cpu or cuda[:i]")
    g.add_argument("--workers", type=integer_flag(), default=_D["workers"], metavar="W", help="DataLoader worker processes")
    g.add_argument("--records", metavar="CSV",
                   help="append a transfer record (task, model, accuracy) for MODEL2VEC here (default for a zoo model: "
                        "the zoo's records in the per-user cache, $TASK2VEC_CACHE or ~/.cache/task2vec, "
                        "records/<zoo>-<hash>/records.csv, which 'zoo fit-model2vec' reads)")
    g.add_argument("--embedding", metavar="EMB.npz",
                   help="the task's embedding, named by the transfer record (default for a zoo model: embedded with "
                        "the zoo's probe, cached beside the zoo's records in tasks/)")
    g.add_argument("--no-records", action="store_true", help="append no transfer record (not even the zoo's default)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="classify images with a fine-tuned checkpoint")
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=integer_flag(low=1), default=PREDICT_TOPK, help="classes shown per image")
    p.add_argument("--json", metavar="OUT.json", help="also write the predictions as JSON")
    add_force_flag(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("cam", help="Grad-CAM heat maps: where the fine-tuned model looks")
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the figure: each image beside its heat map")
    add_force_flag(p)
    p.add_argument("--target-class", metavar="NAME", help="explain this class (default: the predicted one)")
    p.add_argument("--layer", help="feature-map module, dotted (default: the last spatial one)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.set_defaults(func=cmd_cam)
