"""Using a fine-tuned model: a run's checkpoint loaded for prediction, and the main head's logits over a loader."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .augment import eval_transform
from ..defaults import PREDICT_TOPK
from ..errors import CheckpointError, FinetuneError
from ..backbones.models import (data_config_from_dict,
                     new_classifier)
from .multitask import MultiTaskModel
from ..backbones.probe import DataConfig, build_network, normalize_batch, resolve_device
from .checkpoint import load_checkpoint


@torch.no_grad()
def predict_logits(model: nn.Module, loader: torch.utils.data.DataLoader, normalize: Callable[[torch.Tensor], torch.Tensor],
                   device: torch.device, amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Main-head logits (float32) and labels over a loader of uint8 batches, in eval mode."""
    model.eval()
    autocast = autocast_for(device, amp)
    outs, labels_all = [], []
    for images, labels, _, _ in loader:
        if images is None:
            continue
        with autocast:
            outs.append(model(normalize(images)).float().cpu())
        labels_all.append(labels)
    if not outs:
        raise FinetuneError("no readable image to evaluate")
    return torch.cat(outs).numpy(), torch.cat(labels_all).numpy()


def autocast_for(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and amp)


class FinetunedModel:
    """A trained classifier loaded from ``best.pt``/``last.pt``: ``model`` (eval mode), ``classes``,
    ``config`` (preprocessing); ``predict`` gives the top-k classes of images."""

    def __init__(self, model: nn.Module, classes: list[str], config: DataConfig, arch: str, device: torch.device):
        self.model, self.classes, self.config, self.arch, self.device = model, classes, config, arch, device
        self.transform = eval_transform(config)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "FinetunedModel":
        ckpt = load_checkpoint(path)
        config = data_config_from_dict(ckpt.get("data_config"), f"checkpoint {str(path)!r}: data_config")
        device_ = resolve_device(device)
        try:
            net = build_network(ckpt["arch"], random_init=True)
            classes = [str(c) for c in ckpt["classes"]]
            state = {k: v for k, v in ckpt["model_state"].items() if not k.startswith("aux_heads.")}
            dropout = float(ckpt["config"]["params"].get("dropout", 0.0))
            model = MultiTaskModel(net.body, new_classifier(net.feature_dim, len(classes), dropout), None)
            model.load_state_dict(state)
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{str(path)!r} does not hold a usable model ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        return cls(model.eval().to(device_), classes, config, str(ckpt["arch"]), device_)

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """PIL images -> a normalised float batch on the model's device."""
        return normalize_batch(torch.stack([self.transform(im) for im in images]), self.config, self.device)

    @torch.no_grad()
    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Class probabilities (N x C) for PIL images."""
        return torch.softmax(self.model(self.preprocess(images)).float(), dim=1).cpu().numpy()

    def predict(self, images: Sequence[Any], topk: int = PREDICT_TOPK) -> list[list[tuple[str, float]]]:
        """The ``topk`` most probable classes of each image, with their probabilities."""
        if topk < 1:
            raise FinetuneError(f"topk must be >= 1, got {topk}")
        probs = self.predict_proba(images)
        k = min(topk, len(self.classes))
        return [[(self.classes[j], float(p[j])) for j in np.argsort(-p, kind="stable")[:k]] for p in probs]
