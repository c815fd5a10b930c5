"""Which network to fine-tune, and building it with a fresh classifier for the task.

A :class:`ModelChoice` names the architecture, its weights and the input size it was trained
at. :func:`architecture_choice` makes one from a timm/torchvision name; zoo entries and
``recommend --json`` files become one in the zoo stage (:func:`task2vec.zoo.resolve.resolve_model`),
so fine-tuning never reads a zoo. :func:`create_body` builds the body with its weights (the
classifier of the source is dropped); :func:`new_classifier` a fresh linear classifier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, FinetuneError
from .probe import DataConfig, Network, build_network, known_architecture
from ..validate import integer, number


@dataclass(frozen=True)
class ModelChoice:
    """A resolved ``--model``: the architecture, where its weights come from, its zoo (if any) and
    the input size the entry was trained at (None: the architecture's own)."""

    arch: str
    model_id: str
    weights: str | None = None  # a local file; None: $TASK2VEC_WEIGHTS lookup, then download
    zoo: str | None = None  # the zoo folder the entry came from
    input_size: int | None = None  # the entry's ``input_size`` metadata, in pixels


def entry_input_size(value: object, entry_id: str) -> int | None:
    """A zoo entry's or recommendation's recorded input size, checked (None when it records none)."""
    if value is None:
        return None
    return integer(value, f"zoo entry {entry_id!r}: input_size (pixels)", low=32, error=FinetuneError)


def architecture_choice(model: str, weights: str | os.PathLike | None = None) -> ModelChoice:
    """A timm/torchvision name (+ an optional local weights file) as a :class:`ModelChoice`.

    Zoo entries and recommendation files are resolved by :func:`task2vec.zoo.resolve.resolve_model`.
    """
    if not model:
        raise FinetuneError("no model given: pass a timm/torchvision name, ZOO_DIR:ID or a recommend --json file")
    if not known_architecture(model):
        raise FinetuneError(f"unknown model {model!r}: not a torchvision/timm model name, a ZOO_DIR:ID entry "
                            "or a recommend --json file")
    return with_weights(ModelChoice(model, model), weights)


def with_weights(choice: ModelChoice, weights: str | os.PathLike | None) -> ModelChoice:
    """``choice`` with an explicit local weights file, which always wins over the one it names."""
    if weights is None:
        return choice
    if not Path(weights).is_file():
        raise FinetuneError(f"weights file {str(weights)!r} does not exist")
    return replace(choice, weights=str(weights))


def create_body(choice: ModelChoice, *, random_init: bool = False, seed: int = 0) -> Network:
    """The chosen network with its weights and without its classifier.

    Checkpoints fine-tuned for another number of classes load too: only the body must fit.
    """
    return build_network(choice.arch, choice.weights, random_init=random_init, seed=seed, body_only=True)


def new_classifier(in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A fresh linear classifier (zero bias, small weights), with optional dropout before it."""
    linear = nn.Linear(in_features, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear


def data_config_dict(config: DataConfig) -> dict:
    return {"input_size": config.input_size, "mean": list(config.mean), "std": list(config.std),
            "interpolation": config.interpolation, "crop_pct": config.crop_pct}


def data_config_from_dict(d: Any, where: str = "data_config") -> DataConfig:
    """The preprocessing a checkpoint records, every field checked: a bad one is a :class:`CheckpointError`
    naming ``where`` and the field, not a failure deep inside the image transforms."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where} must be a mapping, got {type(d).__name__}")
    missing = [k for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k not in d]
    if missing:
        raise CheckpointError(f"{where} has no {missing[0]!r}")
    size = integer(d["input_size"], f"{where}.input_size", low=1, error=CheckpointError)
    stats = {}
    for key in ("mean", "std"):
        if not isinstance(d[key], (list, tuple)) or len(d[key]) != 3:
            raise CheckpointError(f"{where}.{key} must be three numbers (R, G, B), got {d[key]!r}")
        stats[key] = tuple(number(v, f"{where}.{key}", low=0, low_open=key == "std", error=CheckpointError)
                           for v in d[key])
    if not isinstance(d["interpolation"], str):
        raise CheckpointError(f"{where}.interpolation must be a string, got {d['interpolation']!r}")
    crop = number(d["crop_pct"], f"{where}.crop_pct", low=0, high=1, low_open=True, error=CheckpointError)
    return DataConfig(size, stats["mean"], stats["std"], d["interpolation"], crop)
