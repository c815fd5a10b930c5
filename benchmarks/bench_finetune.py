"""Training throughput of the fine-tuner against a plain PyTorch loop, in one run.

    python benchmarks/bench_finetune.py [--device auto] [--size 112] [--batch 32] [--images 512] [--json out.json]

Both train the same model (torchvision MobileNetV2, random init, BatchNorm frozen as the
fine-tuner does for pretrained weights) with AdamW, the same batch size and, on CUDA, bf16
autocast and channels_last. The plain loop feeds pre-decoded, normalised tensors from memory:
the floor. The fine-tuner reads an ImageFolder of PNG files (decoded once and cached), runs
its sampler, normalisation, loss terms, clipping and schedule; augmentation is off so that
both do the same arithmetic. Reported: images/s of the second epoch of each and their ratio
(target on a GPU: >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from task2vec.finetune.trainer import Trainer
from task2vec.backbones.probe import resolve_device


def make_folder(root: Path, n: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def plain_loop(n: int, size: int, batch: int, device: torch.device, classes: int = 10) -> float:
    """Images/s of a bare training loop over in-memory tensors (second pass timed)."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x_all = torch.randn(n, 3, size, size)
    y_all = torch.arange(n) % classes
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    rate = 0.0
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            x = x_all[i:i + batch].to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[i:i + batch].to(device)
            with autocast:
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t0)
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_folder(data, args.images + args.images // 4, args.size)
        res = Trainer("mobilenet_v2", random_init=True, train_bn=False, image_size=args.size, batch_size=args.batch,
                      epochs=2, augment="none", val_fraction=0.2, patience=0, device=str(device), progress=False,
                      label_smoothing=0.0).fit(data, Path(tmp) / "run")
        trainer_rate = res.history[-1]["images_per_s"]
    plain = plain_loop(args.images, args.size, args.batch, device)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "size": args.size, "batch": args.batch, "trainer_images_per_s": trainer_rate,
           "plain_images_per_s": plain, "ratio": trainer_rate / plain}
    print(f"{device}: fine-tuner {trainer_rate:.1f} img/s, plain loop {plain:.1f} img/s, ratio {out['ratio']:.2f} "
          f"({args.size} px, batch {args.batch})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
