"""A model's own quality: ImageNet-1k top-1, the prior a recommender must not ignore.

On the SFDA benchmark, ranking models by ImageNet top-1 alone reaches a mean weighted
Kendall tau of about 0.65 with fine-tuned accuracy; zoos record top-1 per entry so that
recommendation can add it to the task distance (see :mod:`task2vec.zoo`).

Top-1 comes from timm's published results table (``timm-results-imagenet.csv``, columns
model, img_size, top1, ...), looked up by the exact timm name; torchvision names map to
torchvision's own published figures, then to timm's ``<name>.tv_in1k`` rows (the same
weights evaluated by timm; SFDA's 0.65 baseline reproduces with torchvision's figures).
"""

from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path

from .errors import Task2VecError

RESULTS_ENV = "TASK2VEC_IMAGENET_RESULTS"

# torchvision's documented ImageNet-1k top-1 (IMAGENET1K_V1 weights, 224 px; 299 px for inception_v3).
TORCHVISION_TOP1 = {
    "resnet18": 69.758, "resnet34": 73.314, "resnet50": 76.130, "resnet101": 77.374, "resnet152": 78.312,
    "densenet121": 74.434, "densenet169": 75.600, "densenet201": 76.896, "mobilenet_v2": 71.878,
    "mobilenet_v3_large": 74.042, "mnasnet1_0": 73.456, "googlenet": 69.778, "inception_v3": 77.294,
    "efficientnet_b0": 77.692,
}


def default_results_csv() -> Path | None:
    """``$TASK2VEC_IMAGENET_RESULTS``, else ``$TASK2VEC_SHARED/reference/timm-results-imagenet.csv`` if present."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    shared = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    path = shared / "reference" / "timm-results-imagenet.csv"
    return path if path.is_file() else None


@lru_cache(maxsize=4)
def read_results(path: str) -> dict[str, list[tuple[int, float, float]]]:
    """timm results table: model name -> [(img_size, top1, params in millions), ...]."""
    table: dict[str, list[tuple[int, float, float]]] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                params = float(row["param_count"].replace(",", "")) if row.get("param_count") else float("nan")
                table.setdefault(row["model"], []).append((int(row["img_size"]), float(row["top1"]), params))
    except (OSError, KeyError, ValueError) as exc:
        raise Task2VecError(f"cannot read the ImageNet results table {path!r}: {exc}") from exc
    return table


def imagenet_top1(model: str, input_size: int | None = None, results_csv: str | os.PathLike | None = None) -> float | None:
    """Published ImageNet-1k top-1 of ``model`` (timm or torchvision name), or None when unknown."""
    path = results_csv or default_results_csv()
    table = read_results(str(path)) if path else {}

    def best(rows: list[tuple[int, float, float]]) -> float:
        same = [r for r in rows if input_size is None or r[0] == input_size]
        return max(same or rows, key=lambda r: r[1])[1]

    if model in table:
        return best(table[model])
    if model in TORCHVISION_TOP1:  # torchvision's own evaluation of its own weights
        return TORCHVISION_TOP1[model]
    if f"{model}.tv_in1k" in table:
        return best(table[f"{model}.tv_in1k"])
    return None
