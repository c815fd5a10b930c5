"""Fine-tune a backbone on a task: augmentation, freezing, rebalancing, auxiliary heads.

``Trainer(model, **hyperparameters).fit(dataset, run_dir)`` trains one seed and returns a
:class:`FitResult`; :func:`fit` also runs ``repeats`` seeds and summarises them. A run folder
holds ``config.json``, ``split.csv``, ``metrics.csv``/``metrics.json`` (one row per epoch),
``best.pt`` and ``last.pt`` (plain tensors and containers: ``torch.load(...,
weights_only=True)`` reads them), ``report.json`` and the confusion matrix as CSV and PNG.

The recipe is the one that makes small data sets work: pretrained weights, AdamW with a
lower rate for the body than for the new classifier, linear warm-up then cosine decay,
label smoothing, BatchNorm statistics kept frozen (small batches would corrupt them), strong
augmentation, gradient clipping, early stopping on validation accuracy, and on CUDA bf16
autocast with channels_last.

Under ``torchrun`` (an initialised ``torch.distributed`` group, :mod:`task2vec.distributed`) the
same run is data-parallel: DistributedDataParallel, ``batch_size`` is the *global* batch (each of
W ranks takes ``batch_size / W``, so the schedule and the run's settings are the single process's),
a distributed sampler (the class-balancing one too) re-seeded each epoch by ``set_epoch``,
augmentation seeded per rank, early stopping decided by rank 0 for all, and rank 0 alone writes
the run folder (``--resume`` reads it on every rank: the ranks share a filesystem). Validation is
replicated on every rank (each scores the whole val split).
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics as metrics_mod
from .augment import AugmentConfig, BatchMix, Mixed, preset
from ..defaults import BALANCE, FINETUNE_DEFAULTS as _D, FREEZE_HELP
from ..data import ImageTask, as_task, balanced_indices
from ..distributed import active, all_reduce_sum, barrier, decide, is_main, rank, world_size
from ..errors import FinetuneError
from . import runfolder
from ..io import atomic_open
from .mobius import RandomMobius
from ..backbones.models import (ModelChoice, architecture_choice, create_body, data_config_dict, new_classifier, with_weights)
from .multitask import AuxHeads, AuxLabels, Groups, MultiTaskModel, load_aux_labels, load_groups, superclass_loss
from ..backbones.probe import DataConfig, resolve_device
from ..validate import integer, number, seed as check_seed
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .inference import autocast_for, predict_logits
from .loaders import RunLoaders, split_task

OVERFIT_STEPS_PER_EPOCH = 10
# where the training resolution comes from (config.json's "input_size_from"): explicit, the entry's, the architecture's
INPUT_SIZE_FROM = {"image_size": "image_size given", "entry": "the input size of entry {choice.model_id}",
                   "architecture": "the default of {choice.arch}"}


# ---------------------------------------------------------------------------- splits


# ---------------------------------------------------------------------------- freezing
def freeze_body(body: nn.Module, spec: str) -> int:
    """Apply ``--freeze`` to ``body``; returns the number of frozen parameters (tensors)."""
    names = [n for n, _ in body.named_parameters()]
    if spec == "none":
        cut = -1
    elif spec == "body":
        cut = len(names) - 1
    elif spec.startswith("until:"):
        module = spec[len("until:"):]
        known = dict(body.named_modules())
        if not module or module not in known:
            tops = [n for n, _ in body.named_children()]
            raise FinetuneError(f"--freeze until:{module}: no module {module!r} in the body (top-level: {', '.join(tops)})")
        inside = [i for i, n in enumerate(names) if n.startswith(module + ".")]
        if not inside:
            raise FinetuneError(f"--freeze until:{module}: module {module!r} has no parameters")
        cut = max(inside)
    else:
        raise FinetuneError(f"unknown --freeze {spec!r}: {FREEZE_HELP}")
    for i, (_, p) in enumerate(body.named_parameters()):
        p.requires_grad_(i > cut)
    return cut + 1


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# ---------------------------------------------------------------------------- results
@dataclass
class FitResult:
    """One finished run: where it is, its best epoch and the reports on val (and test)."""

    run_dir: Path
    classes: list[str]
    best_epoch: int
    epochs_run: int
    val: dict[str, Any]
    test: dict[str, Any] | None
    history: list[dict[str, Any]]
    seconds: float

    @property
    def val_accuracy(self) -> float:
        return float(self.val["accuracy"])

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


@dataclass
class RepeatsResult:
    """R runs with different seeds and the mean ± std of their metrics."""

    runs: list[FitResult]
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- the trainer
class Trainer:
    """Fine-tune ``model`` on a task. Hyperparameters here; ``fit`` does the work.

    ``model``: a timm/torchvision name, or a :class:`ModelChoice` (a zoo entry or a recommendation,
    resolved by :func:`task2vec.zoo.resolve.resolve_model`). ``weights``: a local file for it (default:
    the choice's, else ``$TASK2VEC_WEIGHTS``, then the download). ``lr`` is the classifier's rate; the body gets ``lr * body_lr``.
    ``augment``: a preset name or an :class:`AugmentConfig`. ``freeze``: see ``FREEZE_HELP``.
    ``balance``: ``none``, ``sampler`` (oversample small classes) or ``loss-weights``.
    ``aux_labels``: a CSV of auxiliary targets (:mod:`task2vec.finetune.multitask`), weighted by
    ``aux_weight``; ``groups``: a JSON of superclasses, weighted by ``group_weight``.
    ``overfit_batch``: train on one batch of that many images only (a pipeline check).
    ``max_train_images``: train on a seeded, class-balanced subset of the training split (quick runs).
    ``image_size``: the training resolution (default: the ``input_size`` a zoo entry or recommendation
    records, else the architecture's own); ``config.json`` says which in ``input_size_from``.
    ``train_bn``: update BatchNorm statistics; ``None`` means only for ``random_init`` (pretrained
    statistics are better than those of a few small batches).
    """

    def __init__(self, model: str | ModelChoice = _D["model"], *, weights: str | os.PathLike | None = None,
                 random_init: bool = False, epochs: int = _D["epochs"],
                 batch_size: int = _D["batch_size"], lr: float = _D["lr"], body_lr: float = _D["body_lr"],
                 weight_decay: float = _D["weight_decay"], warmup_epochs: float = _D["warmup_epochs"],
                 label_smoothing: float = _D["label_smoothing"], augment: str | AugmentConfig = _D["augment"],
                 freeze: str = _D["freeze"], train_bn: bool | None = None, balance: str = _D["balance"],
                 aux_labels: str | os.PathLike | None = None, aux_columns: Sequence[str] | None = None,
                 aux_weight: float = _D["aux_weight"], groups: str | os.PathLike | None = None,
                 group_weight: float = _D["group_weight"], val_fraction: float = _D["val_fraction"],
                 image_size: int | None = None, patience: int = _D["patience"], grad_clip: float = _D["grad_clip"],
                 dropout: float = _D["dropout"], amp: bool = True, device: str = _D["device"],
                 workers: int = _D["workers"], seed: int = _D["seed"], overfit_batch: int = 0,
                 max_train_images: int | None = None,
                 label_column: str | None = None,
                 progress: bool = True, max_bad_fraction: float = 0.05):
        self.model, self.weights, self.random_init = model, weights, random_init
        self.epochs, self.batch_size, self.lr, self.body_lr = epochs, batch_size, lr, body_lr
        self.weight_decay, self.warmup_epochs, self.label_smoothing = weight_decay, warmup_epochs, label_smoothing
        self.augment, self.freeze, self.train_bn, self.balance = augment, freeze, train_bn, balance
        self.aux_labels, self.aux_columns, self.aux_weight = aux_labels, aux_columns, aux_weight
        self.groups, self.group_weight = groups, group_weight
        self.val_fraction, self.image_size, self.patience = val_fraction, image_size, patience
        self.grad_clip, self.dropout, self.amp, self.device = grad_clip, dropout, amp, device
        self.workers, self.seed, self.overfit_batch, self.label_column = workers, seed, overfit_batch, label_column
        self.max_train_images = max_train_images
        self.progress, self.max_bad_fraction = progress, max_bad_fraction
        self._check_params()

    # -- validation at the door
    def _check_params(self) -> None:
        if not isinstance(self.model, (str, ModelChoice)):
            raise FinetuneError(f"model must be a name or a ModelChoice, got {type(self.model).__name__}")
        ints = {"epochs": (self.epochs, 1), "batch_size": (self.batch_size, 1), "patience": (self.patience, 0),
                "workers": (self.workers, 0), "overfit_batch": (self.overfit_batch, 0)}
        for name, (v, lo) in ints.items():
            integer(v, name, low=lo, error=FinetuneError)
        check_seed(self.seed, error=FinetuneError)
        number(self.lr, "lr", low=0, low_open=True, error=FinetuneError)
        for name in ("body_lr", "weight_decay", "warmup_epochs", "aux_weight", "group_weight", "grad_clip"):
            number(getattr(self, name), name, low=0, error=FinetuneError)
        for name in ("label_smoothing", "dropout"):
            number(getattr(self, name), name, low=0, high=1, high_open=True, error=FinetuneError)
        number(self.val_fraction, "val_fraction", low=0, high=1, low_open=True, high_open=True, error=FinetuneError)
        number(self.max_bad_fraction, "max_bad_fraction", low=0, high=1, error=FinetuneError)
        if self.balance not in BALANCE:
            raise FinetuneError(f"unknown balance {self.balance!r}: choose one of {', '.join(BALANCE)}")
        if not (self.freeze in ("none", "body") or self.freeze.startswith("until:")):
            raise FinetuneError(f"unknown --freeze {self.freeze!r}: {FREEZE_HELP}")
        if self.max_train_images is not None:
            integer(self.max_train_images, "max_train_images", low=2, error=FinetuneError)
        if self.image_size is not None:
            integer(self.image_size, "image_size", low=32, error=FinetuneError)
        self.augment_config()

    def choice(self) -> ModelChoice:
        """The network to fine-tune: ``model`` as a :class:`ModelChoice`, with ``weights`` when given."""
        if isinstance(self.model, ModelChoice):
            return with_weights(self.model, self.weights)
        return architecture_choice(self.model, self.weights)

    def augment_config(self) -> AugmentConfig:
        """The augmentation actually used (none at all when over-fitting one batch)."""
        if self.overfit_batch:
            return preset("none")
        return self.augment if isinstance(self.augment, AugmentConfig) else preset(self.augment)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, JSON-able (what ``config.json`` records)."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        params = {n: getattr(self, n) for n in names}
        params["augment"] = self.augment_config().as_dict()
        if isinstance(self.model, ModelChoice):  # its arch, weights and zoo are in the run's config beside
            params["model"] = self.model.model_id
        for k in ("weights", "aux_labels", "groups"):
            params[k] = None if params[k] is None else str(params[k])
        params["aux_columns"] = list(self.aux_columns) if self.aux_columns else None
        return params

    # -- fitting
    def fit(self, data: Any, run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
            on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> FitResult:
        """Train on ``data`` (folder, CSV or torch Dataset), writing the run to ``run_dir``.

        ``resume=True`` continues from ``run_dir/last.pt`` exactly where it stopped (same
        settings required); a run that had stopped (early stopping, last epoch) is not trained
        further. ``overwrite=True`` replaces a run already in ``run_dir``. The folder is locked
        while the run works in it (:mod:`task2vec.finetune.runfolder`). ``on_epoch_end(epoch, row)`` is
        called after each epoch's files are written (on every rank of a group; rank 0 writes them).
        """
        t_start = time.perf_counter()
        run_dir = Path(run_dir)
        choice = self.choice()
        task = as_task(data, label_column=self.label_column)
        classes = list(task.classes)
        aux = load_aux_labels(self.aux_labels, task, self.aux_columns) if self.aux_labels else None
        groups = load_groups(self.groups, classes) if self.groups else None
        config = self._run_config(choice, task)
        runfolder.check_start(run_dir, config, resume=resume, overwrite=overwrite)  # fail before the set-up

        if self.batch_size % world_size():
            raise FinetuneError(f"batch_size {self.batch_size} (the global batch) is not divisible by the "
                                f"{world_size()} processes of the group")
        splits = self._splits(task)
        device = resolve_device(self.device)
        main = is_main()
        with _seeded_rng(self.seed, torch.device("cpu")):  # the new heads' initial weights
            net = create_body(choice, random_init=self.random_init, seed=self.seed)
            heads = AuxHeads(net.feature_dim, aux) if aux is not None else None
            classifier = new_classifier(net.feature_dim, len(classes), self.dropout)
        size = self.image_size if self.image_size is not None else choice.input_size
        data_cfg = net.config if size is None else replace(net.config, input_size=size)
        if self.progress and main:
            print(f"fine-tuning {choice.model_id} ({choice.arch}) at {data_cfg.input_size} px "
                  f"({INPUT_SIZE_FROM[config['input_size_from']].format(choice=choice)})", flush=True)
        frozen = freeze_body(net.body, self.freeze)
        model = MultiTaskModel(net.body, classifier, heads).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = self._optimizer(model)
        steps_per_epoch = self._steps_per_epoch(len(splits["train"]))
        scheduler = warmup_cosine(optimizer, int(round(self.warmup_epochs * steps_per_epoch)),
                                   self.epochs * steps_per_epoch)

        # created once the network is built (a failed start leaves no run); rank 0 holds it, and decides for all
        with runfolder.claim(run_dir) if main else contextlib.nullcontext(run_dir):
            state = {"epoch": 0, "best": None, "bad_epochs": 0, "history": [], "stopped": None}
            if resume and not runfolder.has_checkpoint(run_dir) and self.progress and main:
                print(f"{run_dir} holds no checkpoint yet: starting from the first epoch", flush=True)
            if decide(main and runfolder.check_start(run_dir, config, resume=resume, overwrite=overwrite)):
                ckpt = load_checkpoint(run_dir / runfolder.CHECKPOINT)
                if decide(main and bool(ckpt.get("stopped")) and (run_dir / "report.json").is_file()):
                    return _result_from_report(run_dir)  # finished before: nothing to train or rewrite
                model.load_state_dict(ckpt["model_state"])
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                state = {k: ckpt.get(k, v) for k, v in state.items()}
            elif main:
                runfolder.clear(run_dir)
                _write_json(run_dir / "config.json", {**config, "classes": classes, "frozen_parameters": frozen,
                                                      "data_config": data_config_dict(data_cfg),
                                                      "split_sizes": {k: int(len(v)) for k, v in splits.items()}})
                _write_split(run_dir / "split.csv", task, splits)

            aug = self.augment_config()
            loaders = RunLoaders(task, splits, data_cfg, aug, self.batch_size // world_size(), self.workers, self.balance,
                               device, self.max_bad_fraction, self.seed)
            if not state["stopped"]:
                self._train(model, loaders, optimizer, scheduler, device, state, run_dir, choice, classes, config,
                            data_cfg, aux, groups, on_epoch_end)
            barrier()  # rank 0 has written best.pt
            return self._finish(model, loaders, device, state, run_dir, classes, splits, t_start)

    def _train(self, model: MultiTaskModel, loaders: "RunLoaders", optimizer, scheduler, device: torch.device,
               state: dict[str, Any], run_dir: Path, choice: ModelChoice, classes: list[str], config: dict[str, Any],
               data_cfg: DataConfig, aux: AuxLabels | None, groups: Groups | None,
               on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> None:
        """The epochs from ``state["epoch"]`` on; each ends with its checkpoint, which records the stop decision."""
        aug = self.augment_config()
        mobius = RandomMobius(p=aug.mobius, strength=aug.mobius_strength) if aug.mobius > 0 else None
        mixer = BatchMix(aug.mixup, aug.cutmix, aug.mix_prob)
        train_labels = loaders.source.labels[loaders.splits["train"]]
        class_weights = balanced_class_weights(train_labels, len(classes)).to(device) if self.balance == "loss-weights" else None
        smoothing = 0.0 if self.overfit_batch else self.label_smoothing
        ckpt_common = _plain({"format": CHECKPOINT_FORMAT, "arch": choice.arch, "model_id": choice.model_id,
                              "classes": classes, "config": config, "data_config": data_config_dict(data_cfg)})
        step = _train_step(model, device)
        main = is_main()
        for epoch in range(state["epoch"], self.epochs):
            t0 = time.perf_counter()
            epoch_seed = self.seed * 100_003 + epoch
            rank_seed = epoch_seed + 1_000_003 * rank()  # augmentation and mixing differ per rank (rank 0: the single run's)
            rng = np.random.default_rng(rank_seed)
            with _seeded_rng(rank_seed, device):  # each epoch from its own seed: a resumed run draws the same
                train_stats = self._train_epoch(model, step, loaders, optimizer, scheduler, device, rng, mobius, mixer,
                                                class_weights, smoothing, aux, groups, epoch, epoch_seed)
            val_logits, val_labels = predict_logits(model, loaders.eval_loader("val"), loaders.normalize, device, self.amp)
            val = metrics_mod.evaluate(val_logits, val_labels, classes)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, **train_stats, "val_loss": val.loss, "val_accuracy": val.accuracy,
                   "val_balanced_accuracy": val.balanced_accuracy, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(seconds, 3)}
            state["history"].append(row)
            best = state["best"]
            improved = best is None or val.accuracy > best["val_accuracy"] + 1e-12 or (
                abs(val.accuracy - best["val_accuracy"]) <= 1e-12 and val.loss < best["val_loss"])
            if improved:
                state["best"] = {"epoch": epoch + 1, "val_accuracy": val.accuracy, "val_loss": val.loss}
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            early = decide(self.patience > 0 and state["bad_epochs"] >= self.patience and not self.overfit_batch)
            if early:  # rank 0's decision, taken by every rank
                state["stopped"] = "early stopping"
            elif state["epoch"] == self.epochs:
                state["stopped"] = "finished"
            if main:
                ckpt = {**ckpt_common, **_plain(state), "model_state": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                if improved:
                    save_checkpoint(run_dir / "best.pt", ckpt)
                save_checkpoint(run_dir / runfolder.CHECKPOINT, ckpt)
                _write_metrics(run_dir, state["history"])
            if self.progress and main:
                print(f"epoch {epoch + 1}/{self.epochs}  train loss {row['train_loss']:.4f}  val acc "
                      f"{val.accuracy:.4f}  val loss {val.loss:.4f}  {row['images_per_s']:.0f} img/s"
                      + ("  *" if improved else ""), flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
            if state["stopped"]:
                break

    def _finish(self, model: MultiTaskModel, loaders: "RunLoaders", device: torch.device, state: dict[str, Any],
                run_dir: Path, classes: list[str], splits: dict[str, np.ndarray], t_start: float) -> FitResult:
        """Evaluate the best checkpoint on val (and test): confusion matrices and ``report.json``."""
        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model_state"])
        reports = {}
        for name in ("val", "test"):
            if name == "test" and not len(splits["test"]):
                continue
            logits, labels = predict_logits(model, loaders.eval_loader(name), loaders.normalize, device, self.amp)
            rep = metrics_mod.evaluate(logits, labels, classes)
            suffix = "" if name == "val" else "_test"
            if is_main():
                metrics_mod.write_confusion_csv(rep.confusion, classes, run_dir / f"confusion{suffix}.csv")
                metrics_mod.plot_confusion(rep.confusion, classes, run_dir / f"confusion{suffix}.png",
                                           title=f"{name} confusion (best epoch {state['best']['epoch']})")
            reports[name] = rep.as_dict()
        result = FitResult(run_dir, classes, state["best"]["epoch"], state["epoch"], reports["val"], reports.get("test"),
                           state["history"], time.perf_counter() - t_start)
        if is_main():
            _write_json(run_dir / "report.json", result.as_dict())
        return result

    # -- pieces of fit
    def _run_config(self, choice: ModelChoice, task: Any) -> dict[str, Any]:
        size_from = "image_size" if self.image_size is not None else "entry" if choice.input_size is not None \
            else "architecture"
        return {"params": self.get_params(), "arch": choice.arch, "model_id": choice.model_id,
                "weights": choice.weights, "zoo": choice.zoo, "input_size_from": size_from,
                "dataset": getattr(task, "source", ""),
                "dataset_fingerprint": task.fingerprint(), "torch": str(torch.__version__)}

    def _splits(self, task: Any) -> dict[str, np.ndarray]:
        splits = split_task(task, self.val_fraction, self.seed)
        if not len(splits["train"]) or not len(splits["val"]):
            raise FinetuneError("the dataset is too small to split into train and val (need >= 2 images per class)")
        if self.max_train_images is not None and len(splits["train"]) > self.max_train_images:
            labels = np.asarray(task.labels)[splits["train"]]
            splits["train"] = np.sort(splits["train"][balanced_indices(labels, self.max_train_images, self.seed)])
        if self.overfit_batch:  # one image of each class first, then file order; val is the same batch
            train = splits["train"]
            first = np.unique(np.asarray(task.labels)[train], return_index=True)[1]
            order = np.concatenate([train[np.sort(first)], np.setdiff1d(train, train[first])])
            chosen = np.sort(order[:min(self.overfit_batch, len(train))])
            return {"train": chosen, "val": chosen, "test": np.array([], dtype=np.int64)}
        return splits

    def _steps_per_epoch(self, n_train: int) -> int:
        if self.overfit_batch:
            return OVERFIT_STEPS_PER_EPOCH
        return max(1, math.ceil(n_train / self.batch_size))

    def _optimizer(self, model: MultiTaskModel) -> torch.optim.Optimizer:
        """AdamW: the heads at ``lr`` (group 0, the logged rate), the body at ``lr * body_lr``, each split into
        decayed weights and undecayed biases and norm scales by timm's ``param_groups_weight_decay``."""
        from timm.optim import param_groups_weight_decay

        heads = nn.ModuleList([m for name, m in model.named_children() if name != "body"])
        groups = []
        for part, lr in ((heads, self.lr), (model.body, self.lr * self.body_lr)):
            # split with a non-zero decay (timm keeps one group at 0), so the groups and checkpoints have one layout
            for g in reversed(param_groups_weight_decay(part, weight_decay=1.0)):
                groups.append({"params": g["params"], "lr": lr, "weight_decay": self.weight_decay if g["weight_decay"] else 0.0})
        return torch.optim.AdamW([g for g in groups if g["lr"] > 0], lr=self.lr)

    def _train_epoch(self, model: MultiTaskModel, step: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
                     loaders: "RunLoaders", optimizer, scheduler, device: torch.device,
                     rng: np.random.Generator, mobius: RandomMobius | None, mixer: BatchMix,
                     class_weights: torch.Tensor | None, smoothing: float, aux: AuxLabels | None,
                     groups: Groups | None, epoch: int, epoch_seed: int) -> dict[str, Any]:
        from tqdm.auto import tqdm

        model.train()
        if not (self.random_init if self.train_bn is None else self.train_bn):
            _set_bn_eval(model)
        autocast = autocast_for(device, self.amp)
        loader = loaders.train_loader(epoch_seed, self.overfit_batch > 0, epoch)
        total, n_seen, n_correct, n_scored, t0 = 0.0, 0, 0, 0, time.perf_counter()
        parts: dict[str, float] = {}
        batches = (b for _ in range(OVERFIT_STEPS_PER_EPOCH) for b in loader) if self.overfit_batch else loader
        n_batches = OVERFIT_STEPS_PER_EPOCH * len(loader) if self.overfit_batch else len(loader)
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                   disable=not (self.progress and is_main()))
        for images, labels, index, bad in bar:
            loaders.note_bad(bad)
            if images is None:
                continue
            x = loaders.normalize(images)
            labels = labels.to(device)
            if mobius is not None:
                x = mobius(x)
            mixed: Mixed | None = mixer(x, rng)
            if mixed is not None:
                x = mixed.images
            with autocast:
                logits, aux_out = step(x)
            logits = logits.float()
            values = self._losses(model, logits, aux_out, labels, index, mixed, class_weights, smoothing, aux, groups)
            loss = sum(values.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.grad_clip)
            optimizer.step()
            scheduler.step()
            b = len(labels)
            n_seen += b
            total += float(loss.detach()) * b
            for k, v in values.items():
                parts[k] = parts.get(k, 0.0) + float(v.detach()) * b
            if mixed is None:
                n_scored += b
                n_correct += int((logits.argmax(1) == labels).sum())
            bar.set_postfix(loss=f"{total / n_seen:.4f}")
        seconds = time.perf_counter() - t0
        loaders.check_bad()
        names = sorted(parts)  # the same terms on every rank
        sums = all_reduce_sum(torch.tensor([total, n_seen, n_correct, n_scored, *(parts[k] for k in names)],
                                           dtype=torch.float64)).tolist()  # the epoch's figures over all ranks
        total, n_seen, n_correct, n_scored = sums[0], int(sums[1]), int(sums[2]), int(sums[3])
        parts = dict(zip(names, sums[4:]))
        row = {"train_loss": total / max(n_seen, 1),
               "train_accuracy": (n_correct / n_scored) if n_scored else None,
               "images_per_s": n_seen / max(seconds, 1e-9)}
        if len(parts) > 1:
            row.update({f"train_{k}_loss": v / max(n_seen, 1) for k, v in parts.items()})
        return row

    def _losses(self, model: MultiTaskModel, logits: torch.Tensor, aux_out: dict[str, torch.Tensor],
                labels: torch.Tensor, index: torch.Tensor, mixed: Mixed | None, class_weights: torch.Tensor | None,
                smoothing: float, aux: AuxLabels | None, groups: Groups | None) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one batch: main, groups, aux (each mixed over pairs when the batch is)."""
        device = logits.device

        def main_loss(r: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, labels[r], weight=class_weights, label_smoothing=smoothing)

        def group_loss(r: torch.Tensor) -> torch.Tensor:
            return self.group_weight * superclass_loss(logits, labels[r], groups)

        def aux_loss(r: torch.Tensor) -> torch.Tensor:
            rows = index[r.cpu()]
            targets = {k: (t.to(device), m.to(device)) for k, (t, m) in aux.targets_for(rows).items()}
            return model.aux_heads.loss({k: v.float() for k, v in aux_out.items()}, targets, self.aux_weight)[0]

        terms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"main": main_loss}
        if groups is not None:
            terms["groups"] = group_loss
        if aux is not None:
            terms["aux"] = aux_loss
        rows = torch.arange(len(labels), device=device)
        return {k: (mixed.loss(fn, rows) if mixed is not None else fn(rows)) for k, fn in terms.items()}


def fit(data: Any, run_dir: str | os.PathLike, *, repeats: int = _D["repeats"], resume: bool = False,
        overwrite: bool = False, **hyperparameters: Any) -> FitResult | RepeatsResult:
    """Fine-tune with :class:`Trainer`; ``repeats > 1`` trains seeds ``seed .. seed + R - 1`` in
    ``run_dir/seed-<s>/`` and writes ``summary.json``/``summary.csv`` with mean ± std.
    ``resume``/``overwrite``: see :meth:`Trainer.fit`."""
    integer(repeats, "repeats", low=1, error=FinetuneError)
    if repeats == 1:
        return Trainer(**hyperparameters).fit(data, run_dir, resume=resume, overwrite=overwrite)
    base = int(hyperparameters.pop("seed", 0))
    trainers = [Trainer(**hyperparameters, seed=base + r) for r in range(repeats)]  # all settings checked first
    runs = []
    for r, trainer in enumerate(trainers):
        sub = Path(run_dir) / f"seed-{base + r}"
        runs.append(trainer.fit(data, sub, resume=resume, overwrite=overwrite))  # no checkpoint yet: starts afresh
    summary = summarize(runs)
    if is_main():
        _write_json(Path(run_dir) / "summary.json", summary)
        _write_summary_csv(Path(run_dir) / "summary.csv", summary)
    return RepeatsResult(runs, summary)


def summarize(runs: Sequence[FitResult]) -> dict[str, Any]:
    """Mean ± std over seeds of the scalar val (and test) metrics."""
    out: dict[str, Any] = {"seeds": len(runs), "runs": [str(r.run_dir) for r in runs]}
    for split in ("val", "test"):
        reports = [getattr(r, split) for r in runs if getattr(r, split) is not None]
        if reports:
            out[split] = metrics_mod.summarize_repeats(reports)
    return out


def _result_from_report(run_dir: Path) -> FitResult:
    d = json.loads((run_dir / "report.json").read_text())
    d["run_dir"] = Path(d["run_dir"])
    return FitResult(**d)


# ---------------------------------------------------------------------------- data loading


def _train_step(model: MultiTaskModel, device: torch.device) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict]]:
    """``model.forward_train``, through DistributedDataParallel in a group (its gradients are averaged over
    the ranks: DDP hooks only ``forward``, so a module whose forward is ``forward_train`` is wrapped)."""
    if not active():
        return model.forward_train
    return nn.parallel.DistributedDataParallel(
        _ForwardTrain(model), device_ids=[device.index] if device.type == "cuda" else None)


class _ForwardTrain(nn.Module):
    """A module whose ``forward`` is ``model.forward_train`` (same parameters)."""

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.forward_train(x)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Loss weights N / (n_classes * count) per class (sklearn's "balanced"); a class absent from ``labels`` gets 1.

    With every class present their mean over the training images is 1; ``n_classes`` counts the absent ones too.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = np.ones(n_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=labels) * (len(present) / n_classes)
    return torch.as_tensor(w, dtype=torch.float32)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total`` steps; every group by its own peak.

    Kept over timm's CosineLRScheduler: it starts the decay on the step the warm-up peaks, ours one step later.
    """
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG (the CPU's, and ``device``'s on an accelerator) seeded to ``seed`` inside the block, the
    caller's RNG state restored after it. Forked, not passed as generators: dropout, the per-image transforms
    and the Möbius maps take no generator and draw from the global RNG (the DataLoader has its own)."""
    accelerator = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else None):
        torch.random.default_generator.manual_seed(seed)
        if accelerator:
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                torch.get_device_module(device.type).manual_seed(seed)
        yield


# ---------------------------------------------------------------------------- files


def _write_json(path: Path, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.write("\n")


def _plain(obj: Any) -> Any:
    """Numbers, strings, lists and dicts only (what ``torch.load(weights_only=True)`` accepts)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _write_split(path: Path, task: Any, splits: dict[str, np.ndarray]) -> None:
    names = task.relative_paths() if isinstance(task, ImageTask) else [str(i) for i in range(len(task))]
    which = {int(i): s for s, idx in splits.items() for i in idx}
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(["path" if isinstance(task, ImageTask) else "index", "class", "split"])
        for i in sorted(which):
            w.writerow([names[i], task.classes[int(task.labels[i])], which[i]])


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    _write_json(run_dir / "metrics.json", history)
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_open(run_dir / "metrics.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})


def _write_summary_csv(path: Path, summary: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(["split", "metric", "mean", "std", "seeds"])
        for split in ("val", "test"):
            if split not in summary:
                continue
            mean, std = summary[split]["mean"], summary[split]["std"]
            for metric, v in mean.items():
                for sub, value in (v.items() if isinstance(v, dict) else [("", v)]):
                    name = f"{metric}.{sub}" if sub else metric
                    w.writerow([split, name, value, (std[metric][sub] if sub else std[metric]), summary["seeds"]])


# ---------------------------------------------------------------------------- using a trained model
