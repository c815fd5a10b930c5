"""Fitting the task's linear classifier on cached probe features.

The probe body is frozen, so the head is a multinomial logistic regression on fixed
features: fitted full-batch with L-BFGS in float64 (deterministic), class-balanced,
with an L2 penalty on standardised features so one default suits every probe.
"""

from __future__ import annotations

import torch
from torch import nn


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                    l2: float, max_iter: int = 200) -> nn.Linear:
    """Return an ``nn.Linear(D, n_classes)`` acting on raw features.

    The loss is the class-balanced mean cross-entropy plus ``l2/2 * ||W||^2`` where W
    acts on standardised features; the standardisation is folded into the returned layer.
    ``l2`` has no default: :class:`task2vec.embedding.embed.Task2Vec` sets it from its ``head_prior``.
    """
    x = features.detach().to("cpu", torch.float64)
    y = labels.detach().to("cpu", torch.long)
    mu = x.mean(0)
    sigma = x.std(0).clamp_min(1e-6)
    z = (x - mu) / sigma
    counts = torch.bincount(y, minlength=n_classes).to(torch.float64)
    sample_w = (1.0 / counts.clamp_min(1))[y]
    sample_w = sample_w / sample_w.sum()
    W = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = nn.functional.cross_entropy(z @ W.T + b, y, reduction="none")
        loss = (sample_w * nll).sum() + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = W / sigma
        bias = b - weight @ mu
    head = nn.Linear(z.shape[1], n_classes)
    head.weight.data.copy_(weight.float())
    head.bias.data.copy_(bias.float())
    return head.requires_grad_(False)
