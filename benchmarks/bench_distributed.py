"""Scaling out, measured: data-parallel embedding under torchrun, and a zoo build on Ray.

  embed  ``task2vec embed`` of one real dataset as 1 and as 2 torchrun processes (gloo, CPU, one
         torch thread each), against the plain single-process run: the largest relative difference
         of the vectors (the target is <= 1e-6) and the wall-time ratios (whole command, and the
         embedding alone as the file records it in ``meta["seconds"]``).
  ray    ``task2vec zoo build SPEC --ray`` of 4 small experts (each trained 1 epoch on a small real
         source and its source embedded) on a local Ray of 1 and of 2 CPUs: the wall-time ratio.
  nccl   (CUDA only; skipped on a CPU machine) the embed row on the GPUs: 1 process against one per GPU.

    python benchmarks/bench_distributed.py [--modes embed,ray,nccl] [--max-samples 256] [--image-size 112]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from task2vec import Embedding

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASK2VEC_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embed_command(nproc: int | None, out: Path, args: argparse.Namespace, device: str) -> tuple[float, Embedding]:
    """Wall seconds of one ``task2vec embed`` (under torchrun with ``nproc`` processes, or plain) and its result."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
                 "127.0.0.1", "--master-port", str(free_port())] if nproc else [sys.executable])
    cmd = [*launcher, "-m", "task2vec", "embed", str(SHARED / "data" / args.dataset), "--weights", str(WEIGHTS),
           "--image-size", str(args.image_size), "--max-samples", str(args.max_samples), "--batch-size",
           str(args.batch_size), "--device", device, "--quiet", "--force", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - start, Embedding.load(out)


def embed_rows(args: argparse.Namespace, device: str, counts: list[int], tmp: Path) -> list[dict]:
    plain_s, plain = embed_command(None, tmp / "plain.npz", args, device)
    rows = [{"mode": f"embed/{device}", "processes": "plain", "wall_s": round(plain_s, 2),
             "embed_s": plain.meta["seconds"], "max_rel_diff": 0.0}]
    for n in counts:
        wall, emb = embed_command(n, tmp / f"n{n}.npz", args, "auto" if device == "cuda" else device)
        rel = float(np.max(np.abs(emb.vector - plain.vector)) / np.max(np.abs(plain.vector)))
        rows.append({"mode": f"embed/{device}", "processes": n, "wall_s": round(wall, 2),
                     "embed_s": emb.meta["seconds"], "max_rel_diff": rel})
    base = rows[1]
    for r in rows:
        r["wall_vs_1"] = round(r["wall_s"] / base["wall_s"], 3)
        r["embed_vs_1"] = round(r["embed_s"] / base["embed_s"], 3)
    return rows


def ray_rows(args: argparse.Namespace, tmp: Path) -> list[dict]:
    import ray

    from task2vec.zoo.spec import build_zoo

    data = SHARED / "data"
    sources = [("ants-bees", data / "hymenoptera" / "train"), ("flowers", data / "flowers5"),
               ("oracle", data / "oracle_mnist_test"), ("cifar", data / "cifar10_test")]
    rows = []
    for cpus in (1, 2):
        spec = {"zoo": f"zoo{cpus}", "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 64,
                "embedding": {"method": "exact", "max_samples": 64},
                "finetune": {"from": str(WEIGHTS), "image_size": 64, "epochs": 1, "max_train_images": 64,
                             "batch_size": 16},
                "entries": [{"id": name, "model": "mobilenet_v2", "checkpoint": f"experts/{name}.safetensors",
                             "source_dataset": str(path)} for name, path in sources]}
        path = tmp / f"spec{cpus}.yaml"
        path.write_text(yaml.safe_dump(spec))
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}})
        try:
            start = time.perf_counter()
            zoo = build_zoo(path, log=lambda _line: None, progress=False, ray="")
            wall = time.perf_counter() - start
        finally:
            ray.shutdown()
        rows.append({"mode": "ray/cpu", "workers": cpus, "tasks": 2 * len(zoo), "wall_s": round(wall, 2)})
    for r in rows:
        r["wall_vs_1"] = round(r["wall_s"] / rows[0]["wall_s"], 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="embed,ray,nccl")
    ap.add_argument("--dataset", default="hymenoptera/train", help="under $TASK2VEC_SHARED/data")
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "embed" in modes:
            rows += embed_rows(args, "cpu", [1, 2], Path(tmp))
        if "ray" in modes:
            rows += ray_rows(args, Path(tmp))
        if "nccl" in modes:
            if torch.cuda.is_available():
                counts = sorted({1, torch.cuda.device_count()})
                rows += embed_rows(args, "cuda", counts, Path(tmp))
            else:
                print("nccl: skipped (no CUDA here)")
    for r in rows:
        r["load_avg_1min"] = round(os.getloadavg()[0], 2)  # after the row: the machine is shared, say how busy it was
        print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
