"""The per-filter Fisher engine side by side with BackPACK and nngeometry: agreement and speed.

For each probe (ResNet-18, MobileNetV2), image size and device, on the same images and the same
task head (``head(probe(x))``, C classes):

  correctness  max relative difference, over filters, between our exact per-filter Fisher
               (``FisherAccumulator``, method ``exact`` at full rank C-1) and BackPACK's
               ``DiagGGNExact`` diagonal summed per filter (cross-entropy ``reduction="sum"``,
               divided by images x weights per filter); the same against nngeometry's
               ``FIM(..., PMatDiag, variant="classif_logits")`` on the layers it supports;
  MC           with ``--mc-draws K``: our Monte Carlo (one label per image) and BackPACK's
               ``DiagGGNMC(mc_samples=1)``, each averaged over K independent draws, as relative
               L2 errors to the exact Fisher (both must shrink like 1/sqrt(K): equal in
               expectation); and, seeded alike, the two draw the same labels and must agree
               draw for draw;
  speed        seconds per image of each, and per (image, label direction): ours evaluates
               C-1 directions (exact) or 1 (MC), BackPACK's exact C (the columns of the
               cross-entropy Hessian's square root), its MC 1, nngeometry C-1.

BackPACK cannot extend ``ReLU6`` (MobileNetV2's activation) nor the functional pooling in
torchvision's ``MobileNetV2.forward``: the script registers ReLU6's derivative with BackPACK
(its documented ``set_module_extension``) and runs MobileNetV2 as
``Sequential(features, AdaptiveAvgPool2d, Flatten, head)``, the same function. ResNet-18 goes
through BackPACK's module converter (``use_converter=True``, for the residual sums).
nngeometry 0.4 has no grouped convolutions: its figures leave MobileNetV2's depthwise layers out.

    python benchmarks/bench_fisher_libs.py [--probes resnet18,mobilenet_v2] [--sizes 32,112,224]
        [--images 16,8,4] [--classes 5] [--mc-draws 16] [--devices cpu,cuda] [--dry-run]
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from task2vec import Probe
from task2vec.embedding.fisher import FisherAccumulator, filter_count

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LAYER_TYPES = (nn.Conv2d, nn.Linear)


def make_probe(name: str, size: int, device: str) -> Probe:
    """Pretrained when ../shared has the weights, else random-init (agreement and speed do not need weights)."""
    local = SHARED / "weights" / f"{name}_imagenet.safetensors"
    if local.is_file():
        return Probe.create(name, weights=local, image_size=size, device=device)
    return Probe.create(name, random_init=True, image_size=size, device=device)


def images(probe: Probe, n: int) -> torch.Tensor:
    """``n`` real images from ../shared/data/flowers5 (random pixels when it is absent), normalised."""
    from PIL import Image

    files = sorted((SHARED / "data" / "flowers5").glob("*/*.jpg"))[:: 7][:n]
    if len(files) == n:
        batch = torch.stack([probe.transform(Image.open(f).convert("RGB")) for f in files])
    else:
        batch = (torch.rand(n, 3, probe.config.input_size, probe.config.input_size,
                            generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return probe.normalize(batch)


def task_head(probe: Probe, classes: int) -> nn.Linear:
    """A fixed random head whose logits spread over a few units (a confident but not saturated task)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = nn.Linear(probe.feature_dim, classes)
    with torch.no_grad():
        head.weight.mul_(8.0)
    return head.to(probe.device).requires_grad_(False)


# ------------------------------------------------------------------------------------ BackPACK
@functools.lru_cache(maxsize=None)
def relu6_extension():
    """BackPACK's DiagGGN module extension for ReLU6 (piecewise linear: derivative 1 on (0, 6), zero Hessian)."""
    from backpack.core.derivatives.elementwise import ElementwiseDerivatives
    from backpack.extensions.secondorder.diag_ggn.diag_ggn_base import DiagGGNBaseModule

    class ReLU6Derivatives(ElementwiseDerivatives):
        def hessian_is_zero(self, module):
            return True

        def df(self, module, g_inp, g_out, subsampling=None):
            x = module.input0 if subsampling is None else module.input0[subsampling]
            return ((x > 0) & (x < 6)).to(x.dtype)

    return DiagGGNBaseModule(derivatives=ReLU6Derivatives())


def out_of_place(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with in-place activations turned off (both libraries' hooks need their inputs)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def backpack_net(probe: Probe, head: nn.Module) -> nn.Module:
    """``head(probe(x))`` as a BackPACK-extended module; weights of conv/linear layers require grad."""
    from backpack import extend

    body = out_of_place(probe.model)
    if type(body).__name__ == "MobileNetV2":
        body = nn.Sequential(body.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = extend(nn.Sequential(body, copy.deepcopy(head)), use_converter=True)
    net.eval().requires_grad_(False)
    for m in net.modules():
        if isinstance(m, LAYER_TYPES):
            m.weight.requires_grad_(True)
    return net


def per_filter(diags: list[torch.Tensor], n: int) -> torch.Tensor:
    """Summed-over-images weight diagonals -> per-filter average Fisher (our layout)."""
    return torch.cat([d.detach().double().flatten(1).sum(1).cpu() / (n * d[0].numel()) for d in diags])


def backpack_fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, extension: str, *,
                    seed: int = 0) -> torch.Tensor:
    """BackPACK's diagonal GGN of the summed cross-entropy, per filter, probe layers only (head dropped)."""
    from backpack import backpack, extend
    from backpack import extensions as E

    ext = {"exact": E.DiagGGNExact, "batch": E.BatchDiagGGNExact, "mc": E.DiagGGNMC}[extension]()
    ext.set_module_extension(nn.ReLU6, relu6_extension())
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    layers = [m for m in net.modules() if isinstance(m, LAYER_TYPES)][:-1]
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        loss = loss_fn(net(x), y)
        with backpack(ext):
            loss.backward()
    attr = {"exact": "diag_ggn_exact", "batch": "diag_ggn_exact_batch", "mc": "diag_ggn_mc"}[extension]
    diags = [getattr(m.weight, attr) for m in layers]
    if extension == "batch":  # per sample (B, ...): what our engine computes, before the average
        diags = [d.sum(0) for d in diags]
    for p in net.parameters():
        p.grad = None
    return per_filter(diags, len(x))


# ---------------------------------------------------------------------------------- nngeometry
def nngeometry_fisher(probe: Probe, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nngeometry's exact Fisher diagonal (PMatDiag, the model's own labels) on the layers it supports.

    Returns (per-filter Fisher on those layers, boolean mask of our filters they cover).
    """
    from nngeometry.layercollection import LayerCollection
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatDiag

    body = out_of_place(probe.model)
    net = nn.Sequential(body, head).eval()
    ours = [m for m in body.modules() if isinstance(m, LAYER_TYPES)]
    ok = [not (isinstance(m, nn.Conv2d) and m.groups > 1) for m in ours]
    lc = LayerCollection()
    for m, keep in zip(ours, ok):
        if keep:
            lc.add_layer_from_model(net, m)
    net.requires_grad_(True)
    try:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.detach().clone()), batch_size=len(x))
        fim = FIM(net, loader, PMatDiag, variant="classif_logits", device=str(x.device), layer_collection=lc)
        diag = fim.get_diag().detach()
    finally:
        net.requires_grad_(False)
    parts, pos = [], 0
    for m, keep in zip(ours, ok):
        if keep:
            k = m.weight.numel()
            parts.append(diag[pos:pos + k].view_as(m.weight))
            pos += k + (m.bias.numel() if m.bias is not None else 0)
    # nngeometry's FIM is the mean over images: per_filter divides by n once more, so multiply back.
    fisher = per_filter(parts, 1)
    mask = torch.cat([torch.full((filter_count(m),), keep) for m, keep in zip(ours, ok)])
    return fisher, mask


# --------------------------------------------------------------------------------------- ours
def our_fisher(probe: Probe, head: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, *,
               seed: int = 0) -> torch.Tensor:
    acc = FisherAccumulator(probe.layers(), method, max_rank=None, generator=torch.Generator().manual_seed(seed))
    acc.update(probe.model, head, x, y)
    return acc.fisher().double()


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over filters of |a - b| / |b|, over filters where b is not negligible (1e-12 of its max)."""
    keep = b.abs() > 1e-12 * b.abs().max()
    return float(((a - b).abs()[keep] / b.abs()[keep]).max())


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


@dataclass
class Row:
    probe: str
    device: str
    size: int
    images: int
    figures: dict


def bench(name: str, device: str, size: int, n: int, classes: int, repeats: int, mc_draws: int,
          use_nngeometry: bool) -> Row:
    probe = make_probe(name, size, device)
    dev = probe.device
    x = images(probe, n).to(dev)
    head = task_head(probe, classes)
    with torch.no_grad():
        y = head(probe.model(x)).argmax(1)  # labels only matter to nothing here (model's own distribution)
    net = backpack_net(probe, head)
    f: dict = {}
    ours = our_fisher(probe, head, x, y, "exact")
    f["bp_exact_maxrel"] = max_rel(ours, backpack_fisher(net, x, y, "exact"))
    f["bp_batch_maxrel"] = max_rel(ours, backpack_fisher(net, x, y, "batch"))
    if use_nngeometry:
        nng, mask = nngeometry_fisher(probe, head, x)
        f["nng_maxrel"] = max_rel(ours[mask], nng)
        f["nng_covered"] = f"{int(mask.sum())}/{len(mask)}"
    if mc_draws:
        ours_mc = torch.stack([our_fisher(probe, head, x, y, "montecarlo", seed=s) for s in range(mc_draws)])
        bp_mc = torch.stack([backpack_fisher(net, x, y, "mc", seed=10_000 + s) for s in range(mc_draws)])
        # With the same seed both draw the same labels (torch.multinomial on the same p): draw for draw equal.
        if dev.type == "cpu":  # (on CUDA BackPACK samples with the device's generator, ours on the CPU)
            f["mc_same_seed_maxrel"] = max_rel(ours_mc[0], backpack_fisher(net, x, y, "mc", seed=0))
        f["mc_draws"] = mc_draws
        f["ours_mc1_err"], f["bp_mc1_err"] = rel_l2(ours_mc[0], ours), rel_l2(bp_mc[0], ours)
        f["ours_mcK_err"], f["bp_mcK_err"] = rel_l2(ours_mc.mean(0), ours), rel_l2(bp_mc.mean(0), ours)
    t = {
        "ours_exact": seconds(lambda: our_fisher(probe, head, x, y, "exact"), dev, repeats),
        "ours_mc": seconds(lambda: our_fisher(probe, head, x, y, "montecarlo"), dev, repeats),
        "bp_exact": seconds(lambda: backpack_fisher(net, x, y, "exact"), dev, repeats),
        "bp_batch": seconds(lambda: backpack_fisher(net, x, y, "batch"), dev, repeats),
        "bp_mc": seconds(lambda: backpack_fisher(net, x, y, "mc"), dev, repeats),
    }
    if use_nngeometry:
        t["nng_exact"] = seconds(lambda: nngeometry_fisher(probe, head, x), dev, repeats)
    dirs = {"ours_exact": classes - 1, "ours_mc": 1, "bp_exact": classes, "bp_batch": classes, "bp_mc": 1,
            "nng_exact": classes - 1}
    for k, v in t.items():
        f[f"{k}_s_img"] = v / n
        f[f"{k}_s_dir"] = v / (n * dirs[k])
    f["exact_ratio_dir"] = f["ours_exact_s_dir"] / f["bp_exact_s_dir"]
    f["batch_ratio_dir"] = f["ours_exact_s_dir"] / f["bp_batch_s_dir"]
    f["mc_ratio"] = f["ours_mc_s_img"] / f["bp_mc_s_img"]
    if use_nngeometry:
        f["nng_ratio_dir"] = f["ours_exact_s_dir"] / f["nng_exact_s_dir"]
    return Row(name, str(dev), size, n, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default="resnet18,mobilenet_v2")
    ap.add_argument("--sizes", default="32,112,224")
    ap.add_argument("--images", default="16,8,4", help="images per size (one batch), in the order of --sizes")
    ap.add_argument("--classes", type=int, default=5, help="task classes C (exact: C-1 directions)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats after one warm-up")
    ap.add_argument("--mc-draws", type=int, default=16, help="Monte Carlo draws averaged (0: no MC agreement)")
    ap.add_argument("--mc-sizes", default="32", help="sizes at which the MC agreement runs")
    ap.add_argument("--no-nngeometry", action="store_true", help="leave nngeometry out (it is the slowest)")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry-run", action="store_true", help="one tiny case per device (checks the script runs)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    counts = [int(s) for s in a.images.split(",")]
    if len(counts) != len(sizes):
        ap.error(f"--images has {len(counts)} values for {len(sizes)} sizes")
    probes = a.probes.split(",")
    mc_sizes = {int(s) for s in a.mc_sizes.split(",") if s}
    if a.dry_run:
        probes, sizes, counts, mc_sizes, a.mc_draws = probes[:1], [32], [2], {32}, 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, C={a.classes}")
    for device in a.devices.split(","):
        for name in probes:
            for size, n in zip(sizes, counts):
                r = bench(name, device, size, n, a.classes, a.repeats, a.mc_draws if size in mc_sizes else 0,
                          not a.no_nngeometry)
                f = r.figures
                line = (f"{r.probe:<13}{r.device:<7}{r.size:>4}px n={r.images:<3} "
                        f"agree: BackPACK exact {f['bp_exact_maxrel']:.1e} batch {f['bp_batch_maxrel']:.1e}")
                if "nng_maxrel" in f:
                    line += f" nngeometry {f['nng_maxrel']:.1e} ({f['nng_covered']} filters)"
                print(line)
                if "mc_draws" in f:
                    print(f"    MC rel. L2 error to exact: 1 draw ours {f['ours_mc1_err']:.3f} BackPACK "
                          f"{f['bp_mc1_err']:.3f}; mean of {f['mc_draws']} ours {f['ours_mcK_err']:.3f} "
                          f"BackPACK {f['bp_mcK_err']:.3f} (independent draws)" +
                          (f"; same seed: max rel. difference {f['mc_same_seed_maxrel']:.1e}"
                           if "mc_same_seed_maxrel" in f else ""))
                times = "  ".join(f"{k} {f[f'{k}_s_img']:.4f}" for k in
                                  ("ours_exact", "bp_exact", "bp_batch", "nng_exact", "ours_mc", "bp_mc")
                                  if f"{k}_s_img" in f)
                print(f"    s/img: {times}")
                ratios = (f"    ours/theirs per label direction: exact/DiagGGNExact {f['exact_ratio_dir']:.2f}, "
                          f"exact/BatchDiagGGNExact {f['batch_ratio_dir']:.2f}, MC/DiagGGNMC {f['mc_ratio']:.2f}")
                if "nng_ratio_dir" in f:
                    ratios += f", exact/nngeometry {f['nng_ratio_dir']:.2f}"
                print(ratios, flush=True)


if __name__ == "__main__":
    main()
