"""Training augmentation: per-image transforms, batch Möbius maps, mixup and cutmix.

An :class:`AugmentConfig` says what is applied; :func:`preset` gives the four named
settings (``none``, ``light``, ``standard``, ``strong``) and ``dataclasses.replace`` (or the
CLI flags) overrides single fields (both live in :mod:`task2vec.finetune.augment_config`, which imports
no torch, and are importable from here). Three stages:

1. per image, in the DataLoader (torchvision.transforms.v2 on uint8 tensors): random resized
   crop ("zoom"), flips, rotation, colour jitter, TrivialAugment or RandAugment, random erasing;
2. per batch, on the training device: random Möbius maps (:mod:`task2vec.finetune.mobius`);
3. per batch: mixup or cutmix (:class:`BatchMix`), which returns the pairing and weight so
   the trainer mixes every loss (main, auxiliary, groups) with the same pairs.

Evaluation always uses the model's own resize + centre crop (:func:`eval_transform`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .augment_config import AUTO_AUGMENT as AUTO_AUGMENT, PRESETS as PRESETS, AugmentConfig, preset as preset
from ..errors import FinetuneError
from ..backbones.probe import DataConfig

def _mode(config: DataConfig) -> InterpolationMode:
    return InterpolationMode.BICUBIC if config.interpolation == "bicubic" else InterpolationMode.BILINEAR


def eval_transform(config: DataConfig) -> Callable:
    """PIL RGB image -> uint8 CHW tensor: the model's resize to size/crop_pct and centre crop."""
    size = config.input_size
    return v2.Compose([v2.PILToTensor(), v2.Resize(int(size / config.crop_pct), interpolation=_mode(config), antialias=True),
                       v2.CenterCrop(size)])


def train_transform(config: DataConfig, aug: AugmentConfig) -> Callable:
    """PIL RGB image -> augmented uint8 CHW tensor at the model's input size."""
    size = config.input_size
    ops: list = [v2.PILToTensor()]
    if aug.zoom < 1.0:
        ops.append(v2.RandomResizedCrop(size, scale=(aug.zoom, 1.0), interpolation=_mode(config), antialias=True))
    else:
        ops += [v2.Resize(int(size / config.crop_pct), interpolation=_mode(config), antialias=True), v2.CenterCrop(size)]
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip:
        ops.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotate:
        ops.append(v2.RandomRotation(aug.rotate, interpolation=InterpolationMode.BILINEAR))  # bicubic: resize only
    if aug.color_jitter:
        j = aug.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if aug.auto_augment == "trivial":
        ops.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    elif aug.auto_augment == "randaugment":
        ops.append(v2.RandAugment(interpolation=InterpolationMode.BILINEAR))
    if aug.erasing:
        ops.append(v2.RandomErasing(p=aug.erasing, value=0))
    return v2.Compose(ops)


@dataclass
class Mixed:
    """A mixed batch: sample i is ``lam * x_i + (1 - lam) * x_perm[i]`` (or a pasted box of it).

    Any loss is then ``lam * L(targets) + (1 - lam) * L(targets[perm])`` (:meth:`loss`), which
    covers the main labels, auxiliary targets and group labels alike.
    """

    images: torch.Tensor
    perm: torch.Tensor
    lam: float

    def loss(self, fn: Callable[[torch.Tensor], torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """``fn(rows)`` computes a loss for the targets of batch rows ``rows``; mix it over the pairs."""
        return self.lam * fn(index) + (1.0 - self.lam) * fn(index[self.perm])


class BatchMix:
    """Mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019) on a float NCHW batch.

    Kept over torchvision's v2.MixUp/CutMix and timm's Mixup: they return mixed labels, not the pairs and weight for aux losses.
    """

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0):
        if mixup < 0 or cutmix < 0 or not 0 <= prob <= 1:
            raise FinetuneError(f"mixup/cutmix alphas must be >= 0 and prob in [0, 1], got {mixup}, {cutmix}, {prob}")
        self.mixup, self.cutmix, self.prob = mixup, cutmix, prob

    @property
    def active(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0

    def __call__(self, images: torch.Tensor, rng: np.random.Generator) -> Mixed | None:
        """Mix the batch, or return ``None`` when this batch is left as it is (``rng`` makes it reproducible)."""
        n = images.shape[0]
        if not self.active or n < 2 or rng.random() >= self.prob:
            return None
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))
        perm = torch.from_numpy(rng.permutation(n)).to(images.device)
        if not use_cutmix:
            out = lam * images + (1 - lam) * images[perm]
        else:
            h, w = images.shape[-2:]
            ch, cw = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1 = max(cy - ch // 2, 0), min(cy + (ch - ch // 2), h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + (cw - cw // 2), w)
            out = images.clone()
            out[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # the pasted area decides the label weight
        return Mixed(out, perm, lam)
