"""A model's own quality: ImageNet-1k top-1, the prior a recommender must not ignore.

On the SFDA benchmark, ranking models by ImageNet top-1 alone reaches a mean weighted
Kendall tau of about 0.65 with fine-tuned accuracy; zoos record top-1 per entry so that
recommendation can add it to the task distance (see :mod:`task2vec.zoo.zoo`).

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

from ..errors import Task2VecError

RESULTS_ENV = "TASK2VEC_IMAGENET_RESULTS"

# torchvision's documented ImageNet-1k top-1 (IMAGENET1K_V1 weights, 224 px; 299 px for inception_v3).
TORCHVISION_TOP1 = {
    "resnet18": 69.758, "resnet34": 73.314, "resnet50": 76.130, "resnet101": 77.374, "resnet152": 78.312,
    "densenet121": 74.434, "densenet169": 75.600, "densenet201": 76.896, "mobilenet_v2": 71.878,
    "mobilenet_v3_large": 74.042, "mnasnet1_0": 73.456, "googlenet": 69.778, "inception_v3": 77.294,
    "efficientnet_b0": 77.692,
    # QNNPACK int8 MobileNetV2 (MobileNet_V2_QuantizedWeights.IMAGENET1K_QNNPACK_V1): ../shared's MobileNetV2 is
    # its dequantized recovery, whose eval outputs equal the quantized model's, so this figure is the one that applies
    "quantized_mobilenet_v2": 71.658,
}


def default_results_csv() -> Path | None:
    """``$TASK2VEC_IMAGENET_RESULTS``, else ``$TASK2VEC_SHARED/reference/timm-results-imagenet.csv`` if present."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    shared = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[3] / "shared"))
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
    found = imagenet_top1_source(model, input_size, results_csv)
    return None if found is None else found[0]


def imagenet_top1_source(model: str, input_size: int | None = None,
                         results_csv: str | os.PathLike | None = None) -> tuple[float, str] | None:
    """(Published ImageNet-1k top-1, where it comes from) for ``model``, or None when unknown.

    A timm name without a tag (``tf_efficientnet_lite0``) is looked up under timm's default
    pretrained tag (``tf_efficientnet_lite0.in1k``), as timm itself resolves it.
    """
    path = results_csv or default_results_csv()
    table = read_results(str(path)) if path else {}

    def best(name: str) -> tuple[float, str]:
        rows = table[name]
        same = [r for r in rows if input_size is None or r[0] == input_size]
        size, top1, _ = max(same or rows, key=lambda r: r[1])
        return top1, f"timm-results-imagenet.csv: {name} at {size} px"

    if model in table:
        return best(model)
    if model in TORCHVISION_TOP1:  # torchvision's own evaluation of its own weights
        return TORCHVISION_TOP1[model], f"torchvision's published figure for {model}"
    for name in (f"{model}.tv_in1k", f"{model}.{_default_tag(model)}"):
        if name in table:
            return best(name)
    return None


def _default_tag(model: str) -> str | None:
    """timm's default pretrained tag of an untagged timm name (None for others)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(model) if "." not in model and timm.is_model(model) else None
    except RuntimeError:
        return None
    return getattr(cfg, "tag", None)
