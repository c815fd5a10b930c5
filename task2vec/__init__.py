"""task2vec: embed image-classification tasks and pick the backbone to fine-tune.

The public names are imported on first use (PEP 562), so ``import task2vec`` and the command
line's start (``task2vec --help``, ``distance``, ``map``) do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# public name -> the submodule that defines it
_LAZY = {
    "Task2Vec": "embedding.embed",
    "Probe": "backbones.probe",
    "Embedding": "embedding.embedding",
    "check_compatible": "embedding.embedding",
    "METHODS": "defaults",
    "symmetric": "embedding.dsym",
    "Zoo": "zoo.zoo",
    "recommend": "zoo.recommendation",
    "Recommendation": "zoo.recommendation",
    **dict.fromkeys(
        ("Task2VecError", "DatasetError", "ImageError", "WeightsError", "ProbeError", "EmbeddingFileError",
         "IncompatibleEmbeddingsError", "OutputPathError", "ZooError", "RecordsError", "SearchIndexError",
         "FinetuneError", "CheckpointError", "SettingError", "UsageError"), "errors"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
