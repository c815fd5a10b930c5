"""Speed of the embedding engine, as ratios measured in one run.

For each probe (mobilenet_v2, resnet34) and device (CPU; CUDA when available):
  floor     = seconds per image of a plain forward + backward (weight gradients, cross-entropy)
              of the probe + a task head, same images, same batch size;
  fisher    = seconds per (image, label direction) of the per-sample Fisher step;
  ratio     = fisher / floor   (targets: Monte Carlo <= 1.5, exact <= 2);
  (the three are timed in turn, ``--repeats`` rounds, and the fastest round of each is kept);
  embed     = end-to-end images/s of ``Task2Vec.embed`` (decoding, features, head fit, Fisher)
              on a real dataset from ../shared.

    python benchmarks/bench_embed.py [--size 224] [--batch-size 32] [--images 96] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from task2vec import Probe, Task2Vec
from task2vec.embedding.fisher import FisherAccumulator, label_directions

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def make_probe(name: str, size: int, device: str) -> Probe:
    local = SHARED / "weights" / f"{name}_imagenet.safetensors"
    if local.is_file():
        return Probe.create(name, weights=local, image_size=size, device=device)
    return Probe.create(name, random_init=True, image_size=size, device=device)  # speed does not depend on weights


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_step(probe: Probe, head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The floor: one forward and one backward computing every weight gradient."""
    probe.model.requires_grad_(True)
    with torch.autocast(probe.device.type, dtype=torch.bfloat16, enabled=probe.device.type == "cuda"):
        loss = nn.functional.cross_entropy(head(probe.model(x)).float(), y)
    loss.backward()
    probe.model.zero_grad(set_to_none=True)
    probe.model.requires_grad_(False)


def interleaved(fns: dict, device: torch.device, repeats: int) -> dict:
    """Seconds per call of each function: one warm-up each, then ``repeats`` rounds taking each in turn;
    the fastest round of each (on a shared CPU the other processes only ever add time)."""
    best = {}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            best[k] = min(best.get(k, float("inf")), time.perf_counter() - t)
    return best


def bench(name: str, device: str, size: int, batch: int, repeats: int, classes: int) -> dict:
    probe = make_probe(name, size, device)
    dev = probe.device
    g = torch.Generator().manual_seed(0)
    x = probe.normalize((torch.rand(batch, 3, size, size, generator=g) * 255).to(torch.uint8))
    y = torch.randint(0, classes, (batch,), generator=g).to(dev)
    head = nn.Linear(probe.feature_dim, classes).to(dev).requires_grad_(False)
    fns, n_dirs = {"floor": lambda: plain_step(probe, head, x, y)}, {}
    for method, rank in (("montecarlo", None), ("exact", classes - 1)):
        acc = FisherAccumulator(probe.layers(), method, max_rank=rank, autocast=dev.type == "cuda",
                                generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            n_dirs[method] = len(label_directions(head(probe.model(x)).float(), y, method, max_rank=rank).vectors)
        fns[method] = lambda acc=acc: acc.update(probe.model, head, x, y)
    best = interleaved(fns, dev, repeats)
    floor = best["floor"] / batch
    out = {"probe": name, "device": str(dev), "size": size, "batch": batch, "floor_img_s": 1 / floor}
    for method in n_dirs:
        per_grad = best[method] / (batch * n_dirs[method])
        out[f"{method}_grads_s"] = 1 / per_grad
        out[f"{method}_ratio"] = per_grad / floor
    return out


def bench_embed(device: str, size: int, images: int) -> dict:
    probe = make_probe("mobilenet_v2", size, device)
    t2v = Task2Vec(probe, max_samples=images, progress=False, workers=min(4, os.cpu_count() or 1))
    t = time.perf_counter()
    emb = t2v.embed(SHARED / "data" / "flowers5")
    sec = time.perf_counter() - t
    return {"device": str(probe.device), "size": size, "images": emb.meta["n_images"], "classes": emb.meta["n_classes"],
            "seconds": sec, "img_s": emb.meta["n_images"] / sec, "noise_half_split": emb.meta["noise_half_split"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (fastest kept)")
    ap.add_argument("--classes", type=int, default=5, help="task classes: exact = classes-1 directions")
    ap.add_argument("--images", type=int, default=96, help="images for the end-to-end embed timing")
    ap.add_argument("--probes", default="mobilenet_v2,resnet34")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-embed", action="store_true", help="skip the end-to-end embed timing")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'probe':<14}{'device':<8}{'px':>5}{'batch':>6}{'floor img/s':>13}{'MC grad/s':>11}{'MC ratio':>10}"
          f"{'exact grad/s':>14}{'exact ratio':>13}")
    for device in a.devices.split(","):
        for name in a.probes.split(","):
            r = bench(name, device, a.size, a.batch_size, a.repeats, a.classes)
            print(f"{r['probe']:<14}{r['device']:<8}{r['size']:>5}{r['batch']:>6}{r['floor_img_s']:>13.1f}"
                  f"{r['montecarlo_grads_s']:>11.1f}{r['montecarlo_ratio']:>10.2f}{r['exact_grads_s']:>14.1f}"
                  f"{r['exact_ratio']:>13.2f}", flush=True)
    for device in a.devices.split(",") if not a.no_embed else ():
        r = bench_embed(device, a.size, a.images)
        print(f"embed flowers5 on {r['device']} at {r['size']} px: {r['images']} images, {r['classes']} classes, "
              f"{r['seconds']:.1f} s = {r['img_s']:.1f} img/s end to end (exact, {r['classes'] - 1} directions), "
              f"half-split noise {r['noise_half_split']:.3f}", flush=True)


if __name__ == "__main__":
    main()
