"""What training augmentation applies (:class:`AugmentConfig`) and its named presets.

Plain settings, importing no torch: the CLI lists the presets without loading torchvision;
:mod:`task2vec.finetune.augment` builds the transforms from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import FinetuneError
from ..validate import number

AUTO_AUGMENT = ("none", "trivial", "randaugment")


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation training uses. Probabilities in [0, 1]; 0 turns a stage off.

    ``zoom``: smallest crop area fraction of RandomResizedCrop (1.0: plain resize + crop).
    ``rotate``: maximum rotation in degrees. ``color_jitter``: brightness/contrast/saturation
    strength. ``erasing``: probability of random erasing (cutout). ``mixup`` / ``cutmix``: Beta
    concentration α (0: off); when both are on, each batch uses one of them at random.
    ``mix_prob``: probability that a batch is mixed at all. ``mobius``: probability of a random
    Möbius map per image, ``mobius_strength`` its size (see :mod:`task2vec.finetune.mobius`).
    """

    hflip: float = 0.0
    vflip: float = 0.0
    rotate: float = 0.0
    zoom: float = 1.0
    color_jitter: float = 0.0
    auto_augment: str = "none"
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    mobius: float = 0.0
    mobius_strength: float = 0.2

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "erasing", "mix_prob", "mobius"):
            number(getattr(self, name), f"augmentation {name} (a probability)", low=0, high=1, error=FinetuneError)
        number(self.zoom, "augmentation zoom (smallest crop area)", low=0, high=1, low_open=True, error=FinetuneError)
        number(self.rotate, "augmentation rotate (degrees)", low=0, high=180, error=FinetuneError)
        for name in ("color_jitter", "mixup", "cutmix"):
            number(getattr(self, name), f"augmentation {name}", low=0, error=FinetuneError)
        if self.auto_augment not in AUTO_AUGMENT:
            raise FinetuneError(f"auto_augment must be one of {', '.join(AUTO_AUGMENT)}, got {self.auto_augment!r}")
        number(self.mobius_strength, "augmentation mobius_strength", low=0, high=1, high_open=True, error=FinetuneError)

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(hflip=0.5, zoom=0.6),
    "standard": AugmentConfig(hflip=0.5, zoom=0.25, color_jitter=0.3, auto_augment="trivial", erasing=0.25),
    "strong": AugmentConfig(hflip=0.5, rotate=15.0, zoom=0.2, color_jitter=0.4, auto_augment="trivial", erasing=0.25,
                            mixup=0.2, cutmix=1.0, mix_prob=0.5, mobius=0.3, mobius_strength=0.2),
}


def preset(name: str) -> AugmentConfig:
    """The named preset: ``none``, ``light``, ``standard`` or ``strong``."""
    if name not in PRESETS:
        raise FinetuneError(f"unknown augmentation preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
