"""What ``--model`` names, resolved: a timm/torchvision name, a zoo entry or a recommendation.

``ZOO_DIR:ID`` (or an id with ``zoo=``) and a ``task2vec recommend --json`` file (its top entry)
are read here, in the zoo stage, and become a :class:`task2vec.backbones.models.ModelChoice` that the
fine-tuner takes as it is. A zoo entry or recommendation also brings the input size it was
trained at (its ``input_size`` metadata): fine-tuning an expert trained at 112 px at 224 px
would throw away what it learned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FinetuneError
from ..backbones.models import ModelChoice, architecture_choice, entry_input_size, with_weights
from .zoo import MANIFEST, Zoo


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
                       entry_input_size(entry.metadata.get("input_size"), entry.id))


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
    return ModelChoice(str(top["model"]), str(entry_id), weights, None,
                       entry_input_size(top.get("input_size"), str(entry_id)))


def resolve_model(model: str, *, weights: str | os.PathLike | None = None,
                  zoo: str | os.PathLike | None = None) -> ModelChoice:
    """Turn ``--model`` (+ ``--weights``, ``--zoo``) into a :class:`ModelChoice`.

    An explicit ``weights`` file always wins over the weights the zoo or recommendation names.
    """
    if not model:
        return architecture_choice(model)  # its one-line error
    if zoo is not None:
        choice = _from_zoo(zoo, model)
    elif model.endswith(".json") and Path(model).is_file():
        choice = _from_recommendation(Path(model))
    elif ":" in model and (Path(model.rsplit(":", 1)[0]) / MANIFEST).is_file():
        zoo_dir, entry_id = model.rsplit(":", 1)
        choice = _from_zoo(zoo_dir, entry_id)
    else:
        return architecture_choice(model, weights)
    return with_weights(choice, weights)
