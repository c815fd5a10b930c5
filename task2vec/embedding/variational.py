"""The variational ("robust") Fisher of Task2Vec (Achille et al. 2019, section 3.1).

Each filter f of each layer l gets a Gaussian weight perturbation N(0, sigma_f^2) shared by
its weights. We learn log sigma_f^2 by minimising

    E_eps[ CE(head(body_{w+eps}(x)), y) ] + (beta / N) * sum_f n_f KL(N(0, sigma_f^2) || N(0, lambda_l^2)),

with the local reparameterisation trick (noise is drawn on each layer's pre-activations,
whose variance is sigma_f^2 times the sum of squared inputs in the filter's receptive
field). To second order the optimum is 1/sigma_f^2 = N F_f / beta + 1/lambda_l^2: an affine
function of the filter's Fisher F_f. The embedding is the per-filter inverse variance;
1/lambda_l^2 is what a trivial task (F = 0) gives, so it defines the trivial embedding.

lambda_l^2 = prior_scale^2 * mean(w^2) over layer l, so the prior is relative to each
layer's weight scale.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import BETA
from .fisher import pad_conv_input, filter_count, weights_per_filter


class _NoiseInjector:
    """Forward hooks adding N(0, sigma^2 * sum(x^2 over receptive field)) to each layer's output."""

    def __init__(self, layers: Sequence[nn.Module], log_var: Sequence[torch.Tensor], generator: torch.Generator):
        self.layers, self.log_var, self.generator = layers, log_var, generator
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(layers)]

    def _hook(self, i: int) -> Callable:
        def hook(module, inputs, output):
            x2 = inputs[0].float().square()
            if isinstance(module, nn.Conv2d):
                g = module.groups
                ones = torch.ones(g, module.in_channels // g, *module.kernel_size, device=x2.device)
                s = F.conv2d(pad_conv_input(module, x2), ones, stride=module.stride,
                             dilation=module.dilation, groups=g)  # (B, g, H, W)
                s = s.repeat_interleave(module.out_channels // g, dim=1)
                var = torch.exp(self.log_var[i]).view(1, -1, 1, 1) * s
            else:
                var = torch.exp(self.log_var[i]) * x2.sum(-1, keepdim=True)
            eps = torch.randn(output.shape, generator=self.generator, device="cpu").to(output.device)
            return output + (var + 1e-20).sqrt().to(output.dtype) * eps.to(output.dtype)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def prior_inverse_variance(layers: Sequence[nn.Module], prior_scale: float = 1.0) -> list[float]:
    """1/lambda_l^2 per layer, lambda_l^2 = prior_scale^2 * mean(w^2) over the layer's weights."""
    return [1.0 / (prior_scale ** 2 * float(m.weight.detach().double().square().mean())) for m in layers]


def variational_fisher(model: nn.Module, head: nn.Module, layers: Sequence[nn.Module],
                       batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], n_images: int, *,
                       beta: float = BETA, prior_scale: float = 1.0, epochs: int = 10, lr: float = 0.05,
                       seed: int = 0, progress: Callable[[int], None] | None = None
                       ) -> tuple[torch.Tensor, list[float], float]:
    """Learn per-filter log-variances; return (inverse variance per filter, 1/lambda_l^2 per layer, final loss)."""
    device = next(iter(model.parameters())).device
    prior_var = [1.0 / p for p in prior_inverse_variance(layers, prior_scale)]
    log_var = [torch.full((filter_count(m),), torch.log(torch.tensor(v)).item(), device=device, requires_grad=True)
               for m, v in zip(layers, prior_var)]
    n_per_filter = [weights_per_filter(m) for m in layers]
    opt = torch.optim.Adam(log_var, lr=lr)
    injector = _NoiseInjector(layers, log_var, torch.Generator().manual_seed(seed))
    loss_value = float("nan")
    try:
        for _ in range(epochs):
            for x, y in batches():
                opt.zero_grad()
                task_loss = F.cross_entropy(head(model(x)).float(), y.to(device))
                kl = sum(n * 0.5 * (lv.exp() / pv - 1 - (lv - torch.log(torch.tensor(pv)))).sum()
                         for lv, pv, n in zip(log_var, prior_var, n_per_filter))
                loss = task_loss + beta / n_images * kl
                loss.backward()
                opt.step()
                loss_value = float(loss.detach())
                if progress:
                    progress(len(x))
    finally:
        injector.remove()
    inverse_var = torch.cat([torch.exp(-lv.detach()).cpu().double() for lv in log_var])
    return inverse_var, [1.0 / v for v in prior_var], loss_value
