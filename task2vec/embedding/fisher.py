"""Per-sample diagonal Fisher information of a network's weights, averaged per filter.

For a sample x with predictive distribution p = softmax(z(x)), the Fisher of weight w is

    F_w = E_x E_{y~p} [ (d log p(y|x) / dw)^2 ] = E_x [ (J^T M J)_ww ],   M = diag(p) - p p^T,

with J = dz/dw. Writing M = sum_k v_k v_k^T turns the expectation over labels into a sum
over *directions* v_k in logit space: back-propagate each v_k once and add the squared
per-sample gradients. The label strategies below only differ in the directions:

- ``exact``: the eigen-directions sqrt(lambda_k) u_k of M (rank C-1, so a 2-class task needs one
  backward pass); with ``max_rank`` < C-1 only the leading ones are kept (and the fraction of
  trace(M) they carry is reported);
- ``montecarlo``: v = (e_y - p)/sqrt(S) for S labels y sampled from p;
- ``empirical``: v = e_y - p for the true label y.

Per-sample weight gradients are never formed for the whole net: for each layer the
gradient w.r.t. its *output* is taken (autograd never computes weight gradients, the
weights are frozen), and the squared norm of every filter's per-sample gradient is
computed from that layer's input and output gradient alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import LABEL_METHODS
from ..distributed import all_reduce_sum
from ..errors import ProbeError

_CHUNK_ELEMENTS = 2**25  # bound on the size of one unfolded input chunk (128 MiB in fp32)
# On the CPU a batch is processed in slices of at most this many input pixels (8 images at 224 px, 32 at
# 112 px): the graph, the taps and every layer's output gradient live at once, so memory grows with
# batch x pixels (5.9 GB peak at 224 px, batch 32), and smaller slices are no slower per image on the CPU.
_CPU_SLICE_PIXELS = 8 * 224 * 224


# ----------------------------------------------------------------------------- directions
@dataclass
class Directions:
    """Logit-space vectors whose back-propagated squared gradients sum to the Fisher."""

    vectors: list[torch.Tensor]  # each (B, C)
    captured: torch.Tensor  # (B,) fraction of trace(M) the vectors carry (1 when exact)


def label_directions(logits: torch.Tensor, labels: torch.Tensor, method: str, *,
                     samples_per_image: int = 1, max_rank: int | None = None,
                     generator: torch.Generator | None = None) -> Directions:
    """Build the back-propagation directions for one batch of logits."""
    p = torch.softmax(logits.detach().double(), dim=1)
    B, C = p.shape
    if method == "empirical":
        onehot = F.one_hot(labels, C).double()
        return Directions([onehot - p], torch.ones(B, dtype=torch.float64))
    if method == "montecarlo":
        draws = torch.multinomial(p.cpu(), samples_per_image, replacement=True, generator=generator).to(p.device)
        scale = samples_per_image ** -0.5
        vecs = [(F.one_hot(draws[:, s], C).double() - p) * scale for s in range(samples_per_image)]
        return Directions(vecs, torch.ones(B, dtype=torch.float64))
    if method != "exact":
        raise ProbeError(f"unknown Fisher label method {method!r} (one of {', '.join(LABEL_METHODS)})")
    rank = C - 1 if max_rank is None else max(1, min(max_rank, C - 1))
    # For large C, diagonalise the principal block of M over the most probable classes:
    # the leading eigen-directions live there.
    k = C if rank == C - 1 else min(C, max(4 * rank, 64))
    top = torch.topk(p, k, dim=1).indices if k < C else torch.arange(C, device=p.device).expand(B, C)
    pk = torch.gather(p, 1, top)
    M = torch.diag_embed(pk) - pk.unsqueeze(2) * pk.unsqueeze(1)
    evals, evecs = torch.linalg.eigh(M.cpu())  # ascending; CPU float64: deterministic everywhere
    evals, evecs = evals.to(p.device).clamp_min(0), evecs.to(p.device)
    trace = (p * (1 - p)).sum(1).clamp_min(1e-300)
    vecs, kept = [], torch.zeros(B, dtype=torch.float64, device=p.device)
    for j in range(rank):
        lam, u = evals[:, k - 1 - j], evecs[:, :, k - 1 - j]
        v = torch.zeros(B, C, dtype=torch.float64, device=p.device)
        v.scatter_(1, top, u * lam.sqrt().unsqueeze(1))
        vecs.append(v)
        kept += lam
    return Directions(vecs, (kept / trace).clamp(max=1.0).cpu())


# ---------------------------------------------------------------- per-sample squared norms
def pad_conv_input(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input as the convolution really sees it, padding applied explicitly."""
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    if type(module).__name__ == "Conv2dSame":  # timm's dynamic 'SAME' padding
        from timm.layers.padding import pad_same

        return pad_same(x, module.kernel_size, module.stride, module.dilation)
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        ph, pw = module.padding
        pads = (pw, pw, ph, ph)
    if not any(pads):
        return x
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(x, pads, mode=mode)


def native_padding(module: nn.Conv2d) -> tuple[int, int] | None:
    """The padding torch's own convolution kernels can apply (symmetric zeros), else None (pad by hand)."""
    if type(module).__name__ == "Conv2dSame" or isinstance(module.padding, str) or module.padding_mode != "zeros":
        return None
    return tuple(module.padding)


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels and module.groups > 1


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a narrower type (bfloat16 under autocast), else unchanged:
    a float64 probe keeps float64 through the per-sample sums."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _gram_sqnorm(G: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """||G_o U^T||^2 per (batch, group, out): G (B,g,O,P), U (B,g,D,P) -> (B,g,O).

    Uses the cheaper of the direct product (O*D*P) and the Gram form (P*P*(D+O)).
    """
    O, P = G.shape[-2], G.shape[-1]
    D = U.shape[-2]
    if P * (D + O) < O * D:
        K = U.transpose(-1, -2) @ U  # (B,g,P,P)
        return ((G @ K) * G).sum(-1)
    return (G @ U.transpose(-1, -2)).square().sum(-1)


def conv_sqnorm(module: nn.Conv2d, x: torch.Tensor, G: torch.Tensor, padded: bool = False) -> torch.Tensor:
    """Per-sample, per-filter sum of squared weight gradients of a Conv2d: (B, C_out).

    ``padded=True`` says ``x`` already went through :func:`pad_conv_input` (the engine pads once,
    for all label directions, the layers whose padding torch's kernels cannot apply themselves).

    Two ways, the cheaper per layer: torch's weight-gradient kernel with every (image, group) as
    its own group, which gives all per-sample gradients (B, C_out, D) in one call (depthwise
    layers, and dense ones with large feature maps: 3-6x faster than unfolding there); or the
    unfolded input times the output gradient, directly or through the P x P Gram matrix (small
    maps, many channels: where the per-sample gradients are larger than the maps).
    """
    native = None if padded else native_padding(module)
    x = at_least_float32(x)
    x = x if padded or native is not None else pad_conv_input(module, x)
    G = at_least_float32(G).contiguous()
    B, Cin = x.shape[:2]
    Cout, Ho, Wo = G.shape[1:]
    g = module.groups
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    ph, pw = native or (0, 0)
    if x.shape[2] + 2 * ph < dh * (kh - 1) + sh * (Ho - 1) + 1 or x.shape[3] + 2 * pw < dw * (kw - 1) + sw * (Wo - 1) + 1:
        raise ProbeError(f"convolution {module} does not match its output size: unsupported padding")
    O, P = Cout // g, Ho * Wo
    D = Cin // g * kh * kw
    if is_depthwise(module) or (kh * kw > 1 and 2 * P * (D + O) >= O * D):
        gw = torch.nn.grad.conv2d_weight(x.reshape(1, B * Cin, *x.shape[2:]), (B * Cout, Cin // g, kh, kw),
                                         G.reshape(1, B * Cout, Ho, Wo), module.stride, (ph, pw),
                                         module.dilation, B * g)
        return gw.reshape(B, Cout, D).square().sum(-1)
    Gv = G.reshape(B, g, O, P)
    if kh == kw == 1 and sh == sw == 1 and not (ph or pw):
        U = x.reshape(B, g, D, P)
        return _gram_sqnorm(Gv, U).reshape(B, Cout)
    step = max(1, _CHUNK_ELEMENTS // max(1, Cin * kh * kw * P))
    parts = []
    for i in range(0, B, step):
        U = F.unfold(x[i:i + step], (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
        parts.append(_gram_sqnorm(Gv[i:i + step], U.reshape(-1, g, D, P)))
    return torch.cat(parts).reshape(B, Cout)


def linear_sqnorm(module: nn.Linear, x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-output sum of squared weight gradients of a Linear: (B, out)."""
    B = x.shape[0]
    x = at_least_float32(x).reshape(B, -1, x.shape[-1])
    G = at_least_float32(G).reshape(B, -1, G.shape[-1])
    if x.shape[1] == 1:
        return G[:, 0].square() * x[:, 0].square().sum(-1, keepdim=True)
    return _gram_sqnorm(G.transpose(1, 2).unsqueeze(1), x.transpose(1, 2).unsqueeze(1)).squeeze(1)


def layer_sqnorm(module: nn.Module, x: torch.Tensor, G: torch.Tensor, padded: bool = False) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return conv_sqnorm(module, x, G, padded)
    if isinstance(module, nn.Linear):
        return linear_sqnorm(module, x, G)
    raise ProbeError(f"no per-sample Fisher for layer type {type(module).__name__}")


def weights_per_filter(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    return module.in_features


def filter_count(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


# ------------------------------------------------------------------------------ the engine
class _Taps:
    """Forward hooks keeping each layer's input and (graph-attached) output for one batch."""

    def __init__(self, modules: Sequence[nn.Module], copy: bool):
        self.copy = copy
        self.inputs: list[torch.Tensor | None] = [None] * len(modules)
        self.outputs: list[torch.Tensor | None] = [None] * len(modules)
        self.versions: list[tuple[int, int]] = [(0, 0)] * len(modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int) -> Callable:
        def hook(module, inputs, output):
            x = inputs[0].detach()
            if self.copy:
                x, output = x.clone(), output.clone()
            self.inputs[i], self.outputs[i] = x, output
            self.versions[i] = (x._version, output._version)
            return output if self.copy else None
        return hook

    def modified_in_place(self) -> bool:
        return any((x._version, o._version) != v for x, o, v in zip(self.inputs, self.outputs, self.versions))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class FisherAccumulator:
    """Accumulates the per-filter Fisher of ``layers`` over batches, split into ``n_groups``.

    ``update(model, head, x, labels, groups)`` runs one forward pass of ``head(model(x))``
    and one backward pass per direction; ``fisher()`` returns per-filter averages. On the CPU
    a large batch is taken in slices of at most ``cpu_slice_pixels`` input pixels (None: whole).
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], method: str = "exact", *,
                 samples_per_image: int = 1, max_rank: int | None = None, n_groups: int = 1,
                 autocast: bool = False, generator: torch.Generator | None = None,
                 cpu_slice_pixels: int | None = _CPU_SLICE_PIXELS):
        if method not in LABEL_METHODS:
            raise ProbeError(f"unknown Fisher label method {method!r} (one of {', '.join(LABEL_METHODS)})")
        if not layers:
            raise ProbeError("the probe has no convolution or linear layers to embed")
        if samples_per_image < 1:
            raise ProbeError(f"samples_per_image must be at least 1, got {samples_per_image}")
        self.names = [n for n, _ in layers]
        self.modules = [m for _, m in layers]
        self.method, self.samples_per_image, self.max_rank = method, samples_per_image, max_rank
        self.autocast, self.generator = autocast, generator
        self.n_groups = n_groups
        self.sums: list[torch.Tensor] | None = None
        self.counts = torch.zeros(n_groups, dtype=torch.float64)
        self.captured_sum = 0.0
        self.copy_taps = False
        self.cpu_slice_pixels = cpu_slice_pixels

    def update(self, model: nn.Module, head: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               groups: torch.Tensor | None = None) -> None:
        device = x.device
        groups = torch.zeros(len(x), dtype=torch.long) if groups is None else groups
        step = len(x)
        if device.type == "cpu" and self.cpu_slice_pixels and x.dim() == 4:
            step = max(1, self.cpu_slice_pixels // (x.shape[-1] * x.shape[-2]))
        if step < len(x):
            for i in range(0, len(x), step):
                self.update(model, head, x[i:i + step], labels[i:i + step], groups[i:i + step])
            return
        groups = groups.to(device)
        taps = _Taps(self.modules, self.copy_taps)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = head(model(x.requires_grad_(True)))
            if not self.copy_taps and taps.modified_in_place():
                taps.remove()
                self.copy_taps = True  # the architecture edits layer tensors in place: keep copies
                return self.update(model, head, x.detach(), labels, groups)
            if any(o is None for o in taps.outputs):
                missing = self.names[[o is None for o in taps.outputs].index(True)]
                raise ProbeError(f"layer {missing!r} was not used in the forward pass")
            dirs = label_directions(at_least_float32(logits), labels.to(device), self.method,
                                    samples_per_image=self.samples_per_image, max_rank=self.max_rank,
                                    generator=self.generator)
            if self.sums is None:
                self.sums = [torch.zeros(self.n_groups, filter_count(m), dtype=torch.float64, device=device)
                             for m in self.modules]
            # Padded by hand once, shared by every direction, where torch's kernels cannot pad themselves.
            padded = [isinstance(m, nn.Conv2d) and native_padding(m) is None for m in self.modules]
            inputs = [pad_conv_input(m, at_least_float32(x)) if pad else x
                      for m, x, pad in zip(self.modules, taps.inputs, padded)]
            for k, v in enumerate(dirs.vectors):
                grads = torch.autograd.grad(logits, taps.outputs, grad_outputs=v.to(logits.dtype),
                                            retain_graph=k < len(dirs.vectors) - 1)
                for i, (module, inp, G) in enumerate(zip(self.modules, inputs, grads)):
                    self.sums[i].index_add_(0, groups, layer_sqnorm(module, inp, G, padded=padded[i]).double())
        finally:
            taps.remove()
        self.counts += torch.bincount(groups.cpu(), minlength=self.n_groups).double()
        self.captured_sum += float(dirs.captured.sum())

    def all_reduce(self) -> None:
        """Sum the per-filter sums, the counts and the captured trace over the ranks of the process group,
        in float64 (:mod:`task2vec.distributed`; nothing outside one): then :meth:`fisher` is the Fisher of
        every rank's samples. A rank that read no batch takes part with zeros."""
        if self.sums is None:
            self.sums = [torch.zeros(self.n_groups, filter_count(m), dtype=torch.float64) for m in self.modules]
        flat = torch.cat([s.flatten().cpu() for s in self.sums]
                         + [self.counts, torch.tensor([self.captured_sum], dtype=torch.float64)])
        flat = all_reduce_sum(flat)
        sizes = [s.numel() for s in self.sums]
        parts = torch.split(flat, [*sizes, self.n_groups, 1])
        self.sums = [p.view_as(s).to(s.device) for p, s in zip(parts, self.sums)]
        self.counts, self.captured_sum = parts[-2].clone(), float(parts[-1])

    def fisher(self, group: int | None = None) -> torch.Tensor:
        """Per-filter average Fisher, concatenated over layers (all groups, or one)."""
        if self.sums is None:
            raise ProbeError("no samples were accumulated")
        n = self.counts.sum() if group is None else self.counts[group]
        parts = []
        for s, m in zip(self.sums, self.modules):
            total = s.sum(0) if group is None else s[group]
            parts.append(total.cpu() / (float(n) * weights_per_filter(m)))
        return torch.cat(parts)

    @property
    def mass_captured(self) -> float:
        """Mean fraction of trace(M) carried by the directions (1.0 unless rank-truncated)."""
        return self.captured_sum / max(float(self.counts.sum()), 1.0)

    def layer_table(self) -> list[dict]:
        return [{"name": n, "type": type(m).__name__, "filters": filter_count(m),
                 "weights_per_filter": weights_per_filter(m)} for n, m in zip(self.names, self.modules)]
