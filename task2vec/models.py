"""Which network to fine-tune, and building it with a fresh classifier for the task.

``--model`` accepts a timm or torchvision name, a zoo entry (``ZOO_DIR:ID``, or an id with
``zoo=``), or a ``task2vec recommend --json`` file (its top entry). :func:`resolve_model`
turns any of these into a :class:`ModelChoice`; :func:`create_model` builds the body with
its weights (the classifier of the source is dropped) and a new linear classifier. A zoo
entry or recommendation also brings the input size it was trained at (its ``input_size``
metadata): fine-tuning an expert trained at 112 px at 224 px would throw away what it learned.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, FinetuneError
from .probe import DataConfig, Network, build_network, known_architecture
from .validate import integer, number
from .zoo import MANIFEST, Zoo


@dataclass(frozen=True)
class ModelChoice:
    """A resolved ``--model``: the architecture, where its weights come from, its zoo (if any) and
    the input size the entry was trained at (None: the architecture's own)."""

    arch: str
    model_id: str
    weights: str | None = None  # a local file; None: $TASK2VEC_WEIGHTS lookup, then download
    zoo: str | None = None  # the zoo folder the entry came from
    input_size: int | None = None  # the entry's ``input_size`` metadata, in pixels


def _input_size(value: object, entry_id: str) -> int | None:
    """An entry's recorded input size, checked (None when it records none)."""
    if value is None:
        return None
    return integer(value, f"zoo entry {entry_id!r}: input_size (pixels)", low=32, error=FinetuneError)


def _from_zoo(zoo_dir: str | os.PathLike, entry_id: str) -> ModelChoice:
    zoo = Zoo.load(zoo_dir)
    entry = next((e for e in zoo.entries if e.id == entry_id), None)
    if entry is None:
        raise FinetuneError(f"zoo {str(zoo.path)!r} has no entry {entry_id!r} (it has: {', '.join(zoo.ids[:8])})")
    where = zoo.weights(entry)
    if where.status == "missing":
        raise FinetuneError(f"zoo entry {entry_id!r}: checkpoint {where.path!r} does not exist "
                            "(rebuild it with 'task2vec zoo build')")
    if where.path is not None and "://" in where.path:
        raise FinetuneError(f"zoo entry {entry_id!r}: remote checkpoint {where.path!r}; download it and pass "
                            "--weights FILE")
    return ModelChoice(entry.model, entry.id, where.path if where.available else None, str(zoo.path),
                       _input_size(entry.metadata.get("input_size"), entry.id))


def _from_recommendation(path: Path) -> ModelChoice:
    try:
        doc = json.loads(path.read_text())
        top = doc["recommendations"][0]
        zoo_dir, entry_id = doc["zoo"], top["id"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise FinetuneError(f"{str(path)!r} is not a 'task2vec recommend --json' file "
                            f"({type(exc).__name__}: {exc})") from None
    if (Path(zoo_dir) / MANIFEST).is_file():
        return _from_zoo(zoo_dir, entry_id)
    weights = top.get("weights") if top.get("weights_available") is True else None
    if weights is not None and not isinstance(weights, str):
        raise FinetuneError(f"{str(path)!r}: the top entry's 'weights' must be a path")
    return ModelChoice(str(top["model"]), str(entry_id), weights, None, _input_size(top.get("input_size"), str(entry_id)))


def resolve_model(model: str, *, weights: str | os.PathLike | None = None,
                  zoo: str | os.PathLike | None = None) -> ModelChoice:
    """Turn ``--model`` (+ ``--weights``, ``--zoo``) into a :class:`ModelChoice`.

    An explicit ``weights`` file always wins over the weights the zoo or recommendation names.
    """
    if not model:
        raise FinetuneError("no model given: pass a timm/torchvision name, ZOO_DIR:ID or a recommend --json file")
    if zoo is not None:
        choice = _from_zoo(zoo, model)
    elif model.endswith(".json") and Path(model).is_file():
        choice = _from_recommendation(Path(model))
    elif ":" in model and (Path(model.rsplit(":", 1)[0]) / MANIFEST).is_file():
        zoo_dir, entry_id = model.rsplit(":", 1)
        choice = _from_zoo(zoo_dir, entry_id)
    elif known_architecture(model):
        choice = ModelChoice(model, model)
    else:
        raise FinetuneError(f"unknown model {model!r}: not a torchvision/timm model name, a ZOO_DIR:ID entry "
                            "or a recommend --json file")
    if weights is not None:
        if not Path(weights).is_file():
            raise FinetuneError(f"weights file {str(weights)!r} does not exist")
        choice = replace(choice, weights=str(weights))
    return choice


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
