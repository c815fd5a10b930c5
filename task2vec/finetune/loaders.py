"""What a fine-tuning run reads: the train/val/test split, the decoded-once image cache and the DataLoaders
(the class-balancing samplers, one process or distributed; the transforms; the bad-image tally)."""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch

from .augment import AugmentConfig, eval_transform, train_transform
from ..data import SPLIT_NAMES, IndexedSubset, ImageTask, SkipBadCollate, report_bad
from ..distributed import active, rank, world_size
from ..backbones.probe import DataConfig, normalize_batch


CACHE_BYTES = 2 << 30  # decoded training images are kept in memory up to about this size


def split_task(task: ImageTask, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of the train / val / test images.

    A tree with ``train/`` and ``val/`` (and ``test/``) folders keeps its split; ``train/``
    alone is split into train/val, stratified and seeded; anything else (no folders, or
    ``val/`` + ``test/`` without ``train/``) is split as a whole into train/val.
    """
    n = len(task)
    folder = np.array([""] * n, dtype=object)
    if isinstance(task, ImageTask):
        for i, rel in enumerate(task.relative_paths()):
            head = rel.split("/", 1)[0].lower()
            folder[i] = {"valid": "val", "validation": "val"}.get(head, head) if head in SPLIT_NAMES else ""
    has = {s: np.flatnonzero(folder == s) for s in ("train", "val", "test")}
    if len(has["train"]) and len(has["val"]):
        return {"train": has["train"], "val": has["val"], "test": has["test"]}
    pool = has["train"] if len(has["train"]) else np.arange(n)
    test = has["test"] if len(has["train"]) else np.array([], dtype=np.int64)
    train, val = stratified_split(np.asarray(task.labels)[pool], val_fraction, seed)
    return {"train": pool[train], "val": pool[val], "test": test}


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions for train and val: per class, round(fraction * n) images (at least 1 when n >= 2) go to val.

    Kept over sklearn's train_test_split(stratify=), which sizes val over the whole set and refuses one-image classes.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(val_fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class ShrunkTask(torch.utils.data.Dataset):
    """``task[i]`` decoded once and kept in memory, shrunk so its shorter side is at most ``side`` pixels.

    Decoding and resizing a large photo costs more than a training step of a small model;
    augmentation then works on the small copy (``side`` leaves room for zoomed crops).
    """

    def __init__(self, task: Any, side: int):
        self.task, self.side, self.memo = task, side, {}
        self.classes, self.labels = task.classes, task.labels

    def __len__(self) -> int:
        return len(self.task)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if i not in self.memo:
            image, label = self.task[i]
            if image is not None and min(image.size) > self.side:
                w, h = image.size
                scale = self.side / min(w, h)
                image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=3, reducing_gap=3.0)
            self.memo[i] = (image, label)
        return self.memo[i]


class RunLoaders:
    """The run's DataLoaders over one task, its split, the transforms and the bad-image tally."""

    def __init__(self, task: Any, splits: dict[str, np.ndarray], config: DataConfig, aug: AugmentConfig,
                 batch_size: int, workers: int, balance: str, device: torch.device, max_bad_fraction: float,
                 seed: int = 0):
        side = 2 * config.input_size
        small = len(task) * 4 * side * side <= CACHE_BYTES  # estimated bytes of the shrunk RGB copies
        self.source, self.task = task, (ShrunkTask(task, side) if isinstance(task, ImageTask) and small else task)
        self.splits, self.config, self.batch_size = splits, config, batch_size
        self.workers, self.balance, self.device, self.max_bad_fraction = workers, balance, device, max_bad_fraction
        self.train_tf, self.eval_tf = train_transform(config, aug), eval_transform(config)
        self.bad: set[int] = set()
        self.seed = seed  # the distributed samplers' (each epoch re-seeds them through set_epoch)

    def _loader(self, indices: np.ndarray, transform, **kw) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            IndexedSubset(self.task, indices, transform), batch_size=self.batch_size, num_workers=self.workers,
            collate_fn=SkipBadCollate(), pin_memory=self.device.type == "cuda",
            persistent_workers=False, **kw)

    def train_loader(self, seed: int, overfit: bool, epoch: int = 0) -> torch.utils.data.DataLoader:
        """The epoch's training batches (``batch_size`` is this rank's share of the global batch in a group)."""
        idx = self.splits["train"]
        g = torch.Generator().manual_seed(seed)
        if active():
            if self.balance == "sampler" and not overfit:
                labels = np.asarray(self.task.labels)[idx]
                sampler = DistributedWeightedSampler(1.0 / np.bincount(labels)[labels], seed=self.seed)
            else:
                sampler = torch.utils.data.DistributedSampler(range(len(idx)), shuffle=not overfit, seed=self.seed)
            sampler.set_epoch(epoch)
            return self._loader(idx, self.eval_tf if overfit else self.train_tf, sampler=sampler, generator=g)
        if overfit:
            return self._loader(idx, self.eval_tf, shuffle=False)
        if self.balance == "sampler":
            labels = np.asarray(self.task.labels)[idx]
            counts = np.bincount(labels)
            weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
            sampler = torch.utils.data.WeightedRandomSampler(weights, len(idx), replacement=True, generator=g)
            return self._loader(idx, self.train_tf, sampler=sampler, generator=g)
        return self._loader(idx, self.train_tf, shuffle=True, generator=g)

    def eval_loader(self, split: str) -> torch.utils.data.DataLoader:
        # a generator of its own for the worker seed each pass draws, which would come from the caller's RNG
        return self._loader(self.splits[split], self.eval_tf, shuffle=False, generator=torch.Generator())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_batch(images, self.config, self.device)

    def note_bad(self, bad: list[int]) -> None:
        self.bad.update(bad)

    def check_bad(self) -> None:
        report_bad(self.source, sorted(self.bad), len(self.splits["train"]), self.max_bad_fraction)
        self.bad.clear()


class DistributedWeightedSampler(torch.utils.data.Sampler[int]):
    """``WeightedRandomSampler`` (with replacement, one epoch of ``len(weights)`` draws) dealt over the ranks:
    every rank draws the same epoch from ``(seed, epoch)`` and takes every W-th draw from its rank on, so the
    ranks together see one class-balanced epoch. Written here: torch has no distributed weighted sampler."""

    def __init__(self, weights: np.ndarray, *, seed: int = 0):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.seed, self.epoch = seed, 0
        self.num_samples = math.ceil(len(self.weights) / world_size())  # per rank; the draws are padded to W of these

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s sample (the same on every rank)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draws = torch.multinomial(self.weights, self.num_samples * world_size(), replacement=True, generator=g)
        return iter(draws[rank()::world_size()].tolist())

    def __len__(self) -> int:
        return self.num_samples
