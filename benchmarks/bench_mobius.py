"""Throughput of the batched Möbius augmentation against the per-image DataLoader-worker way.

    python benchmarks/bench_mobius.py [--device auto|cpu|cuda] [--batch 256] [--size 112] [--repeats 5] [--json out.json]

batched   = ``RandomMobius(p=1)`` on the whole N×3×S×S batch on --device: one map per image, sampled in
            one call, all images warped by one ``grid_sample`` (timings include moving nothing: the batch
            is already on the device, as after ``.to(device)`` in a training loop).
per-image = the same module called on each 3×S×S image in a Python loop on the CPU with one torch thread,
            as in a DataLoader worker (PyTorch sets each worker to one thread; k workers give up to k×).
ratio     = batched images/s ÷ per-image images/s.
Each figure is the median over --repeats passes, the two paths timed in turns (the load of a shared
machine then hits both alike).

p = 1 so every image is warped (with p < 1 both paths skip the same fraction). Also checks that the two
paths give the same pixels for the same maps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from task2vec.finetune.mobius import RandomMobius, sample_mobius


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(fns: list, devices: list[torch.device], repeats: int) -> list[float]:
    """Median seconds of each function, timed in turns (one warm-up call each first), so that a
    shared machine's changing load hits all of them alike."""
    for fn, dev in zip(fns, devices):
        timed(fn, dev)
    times = [[timed(fn, dev) for fn, dev in zip(fns, devices)] for _ in range(repeats)]
    return [statistics.median(col) for col in zip(*times)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per path (after a warm-up); medians are reported")
    ap.add_argument("--strength", type=float, default=0.25)
    ap.add_argument("--uint8", action="store_true", help="uint8 images instead of float32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads of the batched path (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(a.device)
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, 3, a.size, a.size, generator=g)
    if a.uint8:
        x = (x * 255).round().to(torch.uint8)
    aug = RandomMobius(p=1.0, strength=a.strength)
    xd = x.to(dev)

    def per_image_loop() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a DataLoader worker: torch gives each worker one thread
        try:
            for img in x:
                aug(img, generator=g)
        finally:
            torch.set_num_threads(threads)

    batched, per_image = interleaved([lambda: aug(xd, generator=g), per_image_loop], [dev, cpu], a.repeats)

    m = sample_mobius(a.batch, a.strength, generator=g)
    one = torch.cat([aug.warp(img[None], m[i:i + 1]) for i, img in enumerate(x)])
    diff = (aug.warp(xd, m.to(dev)).cpu().float() - one.float()).abs().max().item()

    out = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "batch": a.batch, "size": a.size, "dtype": str(x.dtype).removeprefix("torch."),
        "strength": a.strength, "repeats": a.repeats,
        "batched_img_s": a.batch / batched, "per_image_cpu_img_s": a.batch / per_image, "ratio": per_image / batched,
        "max_abs_diff_same_maps": diff,
    }
    print(f"{a.batch} x 3 x {a.size} x {a.size} {out['dtype']}, strength {a.strength}, "
          f"batched path with {out['threads']} CPU threads, per-image loop with 1")
    print(f"  batched on {out['device_name']}: {out['batched_img_s']:,.0f} img/s")
    print(f"  per image in a loop on CPU: {out['per_image_cpu_img_s']:,.0f} img/s")
    print(f"  ratio batched / per-image: {out['ratio']:.1f}x;  max |batched - per-image| for the same maps: {diff:.1e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
