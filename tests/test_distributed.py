"""Data-parallel embedding and fine-tuning under a real ``torchrun`` (2 gloo processes on the CPU).

Each test launches ``python -m torch.distributed.run --nproc-per-node 2`` on a small real subset of
../shared and compares with the single-process result computed here.
"""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from task2vec import Embedding, Probe, Task2Vec

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2`` of ``args`` (a module run or a script), one torch thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


@pytest.fixture(scope="module")
def ants_bees(shared) -> Path:
    return shared / "data" / "hymenoptera" / "train"


def test_torchrun_embed_equals_the_single_process_embedding(ants_bees, tmp_path, one_torch_thread):
    """40 images in batches of 8 (5 batches: rank 0 reads 3, rank 1 reads 2); rank 0 alone writes."""
    out = tmp_path / "two.t2v.npz"
    proc = torchrun(["-m", "task2vec", "embed", str(ants_bees), "--weights", str(WEIGHTS), "--image-size", "64",
                     "--max-samples", "40", "--batch-size", "8", "--device", "cpu", "--quiet", "-o", str(out)],
                    tmp_path)
    assert proc.stdout.count("embedded ") == 1  # one report, from rank 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.t2v.npz"]  # one file, no temp file left
    two = Embedding.load(out)
    probe = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=64, device="cpu")
    one = Task2Vec(probe, max_samples=40, batch_size=8, progress=False).embed(ants_bees)
    assert relative_error(one.vector, two.vector) < 1e-6
    assert relative_error(one.halves, two.halves) < 1e-6
    assert two.meta["n_images"] == one.meta["n_images"] == 40
    assert two.meta["head"] == one.meta["head"]
    assert two.meta["noise_half_split"] == pytest.approx(one.meta["noise_half_split"], rel=1e-6)
    np.testing.assert_allclose(two.domain_mean, one.domain_mean, rtol=1e-6)


def test_the_python_api_inside_a_process_group_montecarlo(ants_bees, tmp_path, one_torch_thread):
    """The API in a group the caller initialised: every rank returns the same embedding, the single
    process's; montecarlo labels are drawn per batch, so they do not depend on the ranks."""
    script = tmp_path / "embed_in_group.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from pathlib import Path
        import torch.distributed as dist
        from task2vec import Probe, Task2Vec
        from task2vec.distributed import is_main, rank, world_size

        dist.init_process_group("gloo")
        probe = Probe.create("mobilenet_v2", weights={str(WEIGHTS)!r}, image_size=64, device="cpu")
        emb = Task2Vec(probe, "montecarlo", max_samples=24, batch_size=4, progress=False).embed({str(ants_bees)!r})
        emb.save(f"rank{{rank()}}.npz")
        Path(f"rank{{rank()}}.json").write_text(json.dumps({{"rank": rank(), "world": world_size(), "main": is_main()}}))
        dist.destroy_process_group()
    """))
    torchrun([str(script)], tmp_path)  # a file per rank: the ranks' stdout lines can interleave
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen == [{"rank": r, "world": 2, "main": r == 0} for r in (0, 1)]
    r0, r1 = Embedding.load(tmp_path / "rank0.npz"), Embedding.load(tmp_path / "rank1.npz")
    np.testing.assert_array_equal(r0.vector, r1.vector)
    probe = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=64, device="cpu")
    one = Task2Vec(probe, "montecarlo", max_samples=24, batch_size=4, progress=False).embed(ants_bees)
    assert relative_error(one.vector, r0.vector) < 1e-6


FINETUNE = ["--image-size", "64", "--max-train-images", "32", "--batch-size", "16", "--val-fraction", "0.2",
            "--no-records", "--device", "cpu"]


def test_torchrun_finetune_rank0_writes_and_resume_continues(shared, tmp_path, one_torch_thread):
    """A DDP run stopped after its first epoch (every rank leaves in ``on_epoch_end``) is continued by
    ``torchrun ... finetune --resume``: epoch 1 is not trained again, rank 0 alone printed and wrote."""
    data = shared / "data" / "hymenoptera"
    run = tmp_path / "run"
    script = tmp_path / "stop_after_one.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from task2vec.distributed import init_from_env, rank
        from task2vec.finetune.loaders import DistributedWeightedSampler
        from task2vec.finetune.trainer import Trainer

        def stop(epoch, row):
            sys.exit(0)  # as if killed between epochs, on every rank

        device = init_from_env("cpu")
        labels = np.array([0] * 9 + [1] * 3)
        sampler = DistributedWeightedSampler(1.0 / np.bincount(labels)[labels], seed=5)
        sampler.set_epoch(2)
        print("SAMPLER " + json.dumps({{"rank": rank(), "draws": list(sampler)}}), flush=True)
        Trainer("mobilenet_v2", weights={str(WEIGHTS)!r}, epochs=2, batch_size=16, image_size=64,
                max_train_images=32, val_fraction=0.2, device=device, progress=True).fit(
                    {str(data)!r}, {str(run)!r}, on_epoch_end=stop)
    """))
    first = torchrun([str(script)], tmp_path)
    assert first.stdout.count("epoch 1/2 ") == 1  # one rank prints
    # the class-balancing sampler: the ranks deal one epoch of weighted draws between them
    # (the two ranks print to one pipe: their lines may run together, so the objects are found by pattern)
    draws = dict(sorted((d["rank"], d["draws"]) for d in (json.loads(m) for m in
                                                          re.findall(r"SAMPLER (\{[^{}]*\})", first.stdout))))
    weights = torch.tensor([1 / 9] * 9 + [1 / 3] * 3, dtype=torch.float64)
    epoch = torch.multinomial(weights, 12, replacement=True, generator=torch.Generator().manual_seed(5 * 100_003 + 2))
    assert draws[0] == epoch[0::2].tolist() and draws[1] == epoch[1::2].tolist()
    one_epoch = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in one_epoch] == [1] and not (run / "report.json").exists()

    second = torchrun(["-m", "task2vec", "finetune", str(data), "--weights", str(WEIGHTS), "--epochs", "2",
                       "-o", str(run), "--resume", *FINETUNE], tmp_path)
    assert "epoch 1/2 " not in second.stdout and second.stdout.count("epoch 2/2 ") == 1
    assert second.stdout.count("best epoch") == 1
    history = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == one_epoch[0]
    report = json.loads((run / "report.json").read_text())
    assert report["epochs_run"] == 2
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    config = json.loads((run / "config.json").read_text())
    assert config["params"]["batch_size"] == 16  # the global batch: the run's settings are the single process's


@pytest.mark.slow
def test_torchrun_finetune_reaches_the_single_process_accuracy(shared, tmp_path, one_torch_thread):
    """Ants vs bees (244 train / 153 val images) at 96 px, 3 epochs, global batch 16: 2 gloo processes of 8
    images each reach the validation accuracy of one process of 16 within 1 point (measured: 0.8954 vs 0.8889)."""
    from task2vec.finetune.trainer import Trainer

    data = shared / "data" / "hymenoptera"
    settings = ["--epochs", "3", "--batch-size", "16", "--image-size", "96", "--no-records", "--device", "cpu"]
    torchrun(["-m", "task2vec", "finetune", str(data), "--weights", str(WEIGHTS), "-o", str(tmp_path / "ddp"),
              "--quiet", *settings], tmp_path, timeout=1200)
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())["val"]["accuracy"]
    one = Trainer("mobilenet_v2", weights=WEIGHTS, epochs=3, batch_size=16, image_size=96, device="cpu",
                  progress=False).fit(data, tmp_path / "one").val_accuracy
    assert abs(ddp - one) <= 0.01, (ddp, one)


def test_outside_torchrun_nothing_is_joined_and_a_fixed_gpu_is_refused_under_it(monkeypatch):
    from task2vec.distributed import init_from_env, is_main, shard_batches, world_size
    from task2vec.errors import UsageError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") == "cpu" and world_size() == 1 and is_main()
    assert shard_batches(10, 4).tolist() == list(range(10))  # one process reads every batch
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="--device cuda:1 under torchrun"):
        init_from_env("cuda:1")
