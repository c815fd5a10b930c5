"""The fine-tuner: splits, freezing, losses wiring, checkpoints, resume, bad input, CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from task2vec.finetune.augment import BatchMix, preset, train_transform
from task2vec.zoo.cache import user_cache_dir, zoo_key, zoo_records
from task2vec.cli.main import main
from task2vec.data import load_task
from task2vec.errors import CheckpointError, FinetuneError, RecordsError, RunBusyError
from task2vec.finetune.inference import FinetunedModel
from task2vec.finetune.trainer import Trainer, balanced_class_weights, fit, freeze_body, warmup_cosine
from task2vec.finetune.checkpoint import load_checkpoint
from task2vec.finetune.loaders import split_task, stratified_split
from task2vec.zoo.records import append_transfer_record, read_records
from task2vec.zoo.resolve import resolve_model
from task2vec.backbones.probe import build_network
from task2vec.finetune.runfolder import LOCK_FILE, claim
from task2vec.zoo.zoo import Zoo

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[3] / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.safetensors"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
FAST = dict(model="mobilenet_v2", random_init=True, image_size=32, batch_size=8, epochs=2, progress=False,
            augment="light", lr=3e-3, body_lr=1.0)


def _make_images(root: Path, per_class: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{name}_{i}.png")


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    _make_images(root)
    return root


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- splits and freezing
def test_stratified_split_is_seeded_and_keeps_every_class_in_both_parts():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(17))
    assert [int((labels[va] == c).sum()) for c in range(3)] == [2, 1, 1]
    assert (labels[tr] == 2).sum() == 1
    tr2, va2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 0.2, seed=4)[1])


def test_split_folders_are_kept_and_train_alone_is_split(tmp_path):
    for split in ("train", "val", "test"):
        _make_images(tmp_path / "full" / split, per_class=3)
    _make_images(tmp_path / "trainonly" / "train", per_class=5)
    task = load_task(tmp_path / "full")
    s = split_task(task, 0.2, 0)
    rel = task.relative_paths()
    for name in ("train", "val", "test"):
        assert len(s[name]) == 9 and all(rel[i].startswith(name + "/") for i in s[name])
    s = split_task(load_task(tmp_path / "trainonly"), 0.2, 0)
    assert len(s["train"]) == 12 and len(s["val"]) == 3 and len(s["test"]) == 0


def test_freeze_body_modes():
    body = build_network("mobilenet_v2", random_init=True).body
    n = len(list(body.parameters()))
    assert freeze_body(body, "none") == 0 and all(p.requires_grad for p in body.parameters())
    assert freeze_body(body, "body") == n and not any(p.requires_grad for p in body.parameters())
    frozen = freeze_body(body, "until:features.16")
    names = [k for k, p in body.named_parameters() if p.requires_grad]
    assert 0 < frozen < n and names[0].startswith("features.17.")
    with pytest.raises(FinetuneError, match="no module 'features.99'"):
        freeze_body(body, "until:features.99")
    with pytest.raises(FinetuneError, match="unknown --freeze 'half'"):
        freeze_body(body, "half")


def test_class_weights_are_inverse_frequency_with_mean_one():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 2).numpy()
    assert np.allclose(w, [4 / 6, 4 / 2])


def test_class_weights_count_a_class_absent_from_train_and_give_it_one():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert w.dtype == torch.float32
    assert w.tolist() == torch.tensor([4 / 9, 4 / 3, 1.0], dtype=torch.float32).tolist()


def _schedule_factor(step: int, warmup: int, total: int) -> float:
    """The rate at ``step`` over the peak rate: linear warm-up to the peak, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))


@pytest.mark.parametrize("warmup, total", [(0, 7), (1, 5), (2, 6), (3, 20), (4, 4), (5, 3), (37, 450)])
def test_warmup_cosine_gives_the_same_rate_at_every_step(warmup, total):
    """Per step and per parameter group (each its own peak), to 1e-9, two steps past the end included."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    peaks = (3e-3, 3e-4)
    optimizer = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, peaks)], lr=peaks[0])
    scheduler = warmup_cosine(optimizer, warmup, total)
    rates = []
    for _ in range(total + 2):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [[peak * _schedule_factor(s, warmup, total) for peak in peaks] for s in range(total + 2)]
    assert np.abs(np.array(rates) - np.array(expected)).max() <= 1e-9 * max(peaks)
    if (warmup, total) == (2, 6):  # the peak is held for two steps: the last of the warm-up and the first of the decay
        factors = [r[0] / peaks[0] for r in rates]
        assert factors == pytest.approx([0.5, 1.0, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                         (1 + math.cos(3 * math.pi / 4)) / 2, 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("name", ["none", "light", "standard", "strong"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_presets_transform_any_model_config(name, interpolation):
    from task2vec.finetune.augment import train_transform
    from task2vec.backbones.probe import DataConfig

    cfg = DataConfig(input_size=48, interpolation=interpolation)
    aug = preset(name) if name != "strong" else replace(preset("strong"), auto_augment="randaugment")
    torch.manual_seed(0)
    out = train_transform(cfg, aug)(Image.new("RGB", (90, 70), (10, 200, 30)))
    assert out.shape == (3, 48, 48) and out.dtype == torch.uint8


def test_batch_mix_pairs_and_cutmix_area():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    rng = np.random.default_rng(0)
    mixed = BatchMix(cutmix=1.0)(x, rng)
    pasted = (mixed.images != x).any(1)  # pixels taken from the partner image
    moved = [i for i in range(4) if int(mixed.perm[i]) != i]
    assert moved and 0 < mixed.lam < 1
    for i in moved:
        assert mixed.lam == pytest.approx(1 - pasted[i].float().mean().item())
    labels = torch.tensor([0, 1, 2, 3])
    fn = lambda rows: torch.nn.functional.one_hot(labels[rows], 4).float()  # noqa: E731
    soft = mixed.loss(fn, torch.arange(4))
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert soft[moved[0], moved[0]] == pytest.approx(mixed.lam)
    assert BatchMix(0.0, 0.0)(x, rng) is None and BatchMix(1.0, prob=0.0)(x, rng) is None
    with pytest.raises(FinetuneError, match="unknown augmentation preset 'wild'"):
        preset("wild")


# ---------------------------------------------------------------- a full run, checkpoints, resume
def test_fit_writes_a_complete_run_and_checkpoints_load_weights_only(colours, tmp_path):
    res = Trainer(**FAST).fit(colours, tmp_path / "run")
    run = tmp_path / "run"
    for f in ("config.json", "split.csv", "metrics.csv", "metrics.json", "best.pt", "last.pt", "report.json",
              "confusion.csv", "confusion.png"):
        assert (run / f).is_file(), f
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]  # no temp files left
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["classes"] == ["blue", "green", "red"] and ckpt["arch"] == "mobilenet_v2"
    assert {"model_state", "optimizer", "scheduler", "epoch", "config"} <= set(ckpt)
    assert len(res.history) == 2 and res.val["n_samples"] == 6
    with open(run / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    split = list(csv.DictReader(open(run / "split.csv")))
    assert {r["split"] for r in split} == {"train", "val"} and len(split) == 24
    model = FinetunedModel.load(run / "best.pt", device="cpu")
    img = Image.open(next((colours / "red").iterdir())).convert("RGB")
    top = model.predict([img], topk=2)[0]
    assert len(top) == 2 and sum(p for _, p in top) <= 1 + 1e-6


def test_existing_run_is_never_overwritten(colours, tmp_path):
    Trainer(**{**FAST, "epochs": 1}).fit(colours, tmp_path / "run")
    before = _files(tmp_path / "run")
    with pytest.raises(FinetuneError, match="already holds a run"):
        Trainer(**{**FAST, "epochs": 1}).fit(colours, tmp_path / "run")
    assert _files(tmp_path / "run") == before


def test_resume_continues_exactly_where_it_stopped(colours, tmp_path):
    kw = {**FAST, "epochs": 3, "augment": "strong", "patience": 0}
    straight = Trainer(**kw).fit(colours, tmp_path / "a")

    def stop_after_one(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(**kw).fit(colours, tmp_path / "b", on_epoch_end=stop_after_one)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = Trainer(**kw).fit(colours, tmp_path / "b", resume=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    with pytest.raises(FinetuneError, match="setting 'lr' differs"):
        Trainer(**{**kw, "lr": 1e-2}).fit(colours, tmp_path / "b", resume=True)
    assert Trainer(**kw).fit(colours, tmp_path / "nothing", resume=True).epochs_run == 3  # nothing to continue


def test_fit_leaves_the_callers_torch_rng_as_it_was(colours, tmp_path):
    """No global reseeding: the caller's torch RNG is where it was, and the run's own draws are seeded all the same."""
    kw = {**FAST, "augment": "strong", "dropout": 0.3}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = Trainer(**kw).fit(colours, tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(1000)  # the caller's RNG elsewhere: the same run
    second = Trainer(**kw).fit(colours, tmp_path / "b")
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]


def test_a_start_killed_before_its_first_checkpoint_is_not_a_run(colours, tmp_path):
    """config.json and split.csv without last.pt (a kill in the first epoch): a rerun and --resume both start over."""
    kw = {**FAST, "epochs": 1}

    def die(epoch, row):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    Trainer(**kw).fit(colours, run)
    straight = _files(run)
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.json", "report.json", "confusion.csv", "confusion.png"):
        (run / name).unlink()
    (run / "config.json").write_text('{"params": {"lr": 99}}')  # even a foreign config: nothing was trained
    res = Trainer(**kw).fit(colours, run)
    assert res.epochs_run == 1 and _files(run)["split.csv"] == straight["split.csv"]
    for name in ("last.pt", "best.pt", "report.json"):
        (run / name).unlink()
    res = Trainer(**kw).fit(colours, run, resume=True)  # nothing to continue: starts from nothing
    a, b = load_checkpoint(tmp_path / "run" / "last.pt")["model_state"], None
    Trainer(**kw).fit(colours, tmp_path / "fresh")
    b = load_checkpoint(tmp_path / "fresh" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(KeyboardInterrupt):
        Trainer(**{**kw, "epochs": 2}).fit(colours, tmp_path / "killed", on_epoch_end=die)
    with pytest.raises(FinetuneError, match="already holds a run: use --resume to continue it, --force to replace it"):
        Trainer(**{**kw, "epochs": 2}).fit(colours, tmp_path / "killed")


def test_resume_of_a_stopped_run_trains_no_further(colours, tmp_path):
    """The stop decision (early stopping, last epoch) is saved with the checkpoint."""
    kw = {**FAST, "epochs": 6, "patience": 1, "lr": 1e-30, "body_lr": 0.0, "train_bn": False}  # stops after epoch 2
    first = Trainer(**kw).fit(colours, tmp_path / "run")
    assert first.epochs_run == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["stopped"] == "early stopping"
    before = _files(tmp_path / "run")
    again = Trainer(**kw).fit(colours, tmp_path / "run", resume=True)
    assert again.epochs_run == 2 and _files(tmp_path / "run") == before  # nothing trained, nothing rewritten
    (tmp_path / "run" / "report.json").unlink()  # killed while writing the report: only the report is redone
    again = Trainer(**kw).fit(colours, tmp_path / "run", resume=True)
    assert again.epochs_run == 2 and (tmp_path / "run" / "report.json").is_file()
    assert _files(tmp_path / "run")["last.pt"] == before["last.pt"]


def test_force_replaces_a_run_and_a_locked_folder_is_refused(colours, tmp_path):
    run = tmp_path / "run"
    Trainer(**{**FAST, "epochs": 1}).fit(colours, run)
    (run / "notes.txt").write_text("mine")
    res = Trainer(**{**FAST, "epochs": 2}).fit(colours, run, overwrite=True)
    assert res.epochs_run == 2 and len(res.history) == 2 and (run / "notes.txt").read_text() == "mine"
    with pytest.raises(FinetuneError, match="resume and overwrite exclude each other"):
        Trainer(**FAST).fit(colours, run, resume=True, overwrite=True)
    with claim(tmp_path / "busy"):
        with pytest.raises(RunBusyError, match="is in use by another fine-tune"):
            Trainer(**FAST).fit(colours, tmp_path / "busy")
    assert not (tmp_path / "busy" / "config.json").exists()


def test_two_fine_tunes_into_one_new_folder_one_wins_the_other_is_refused(colours, tmp_path):
    """Started together into the same new -o: exactly one runs, the other exits 2 (never both 0)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "task2vec", "finetune", str(colours), "-o", str(tmp_path / "run"), "--model",
            "mobilenet_v2", "--random-init", "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--no-records",
            "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(e for p, (_, e) in zip(procs, outs) if p.returncode == 2).strip()
    assert err.count("\n") == 0 and err.startswith("task2vec: error: run folder")
    assert "in use by another fine-tune" in err or "already holds a run" in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2


def test_overfit_batch_learns_the_batch(colours, tmp_path):
    res = Trainer(**{**FAST, "overfit_batch": 6, "epochs": 4}).fit(colours, tmp_path / "o")
    assert res.val["n_samples"] == 6 and res.history[-1]["train_accuracy"] == 1.0
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_multitask_run_with_aux_labels_and_groups(colours, tmp_path):
    aux = tmp_path / "aux.csv"
    aux.write_text("class,warm,brightness,kind\nred,1.0,3.2,hot\ngreen,0.2,5.1,cold\nblue,0.0,1.0,cold\n")
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"warm": ["red"], "cool": ["green", "blue"]}))
    res = Trainer(**FAST, aux_labels=aux, groups=groups, balance="sampler").fit(colours, tmp_path / "mt")
    row = res.history[-1]
    assert {"train_main_loss", "train_aux_loss", "train_groups_loss"} <= set(row)
    assert any(k.startswith("aux_heads.") for k in load_checkpoint(tmp_path / "mt" / "best.pt")["model_state"])
    model = FinetunedModel.load(tmp_path / "mt" / "best.pt", device="cpu")  # aux heads are not part of the model
    assert model.model.aux_heads is None


def test_bad_input_fails_before_anything_is_written(colours, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(FinetuneError, match="unknown model 'resnet_9000'"):
        Trainer(**{**FAST, "model": "resnet_9000"}).fit(colours, out)
    bad_aux = tmp_path / "aux.csv"
    bad_aux.write_text("class,warm\nred,1.0\ngreen,0.5\n")  # blue is missing
    with pytest.raises(FinetuneError, match="blue"):
        Trainer(**FAST, aux_labels=bad_aux).fit(colours, out)
    bad_groups = tmp_path / "g.json"
    bad_groups.write_text(json.dumps({"a": ["red", "purple"], "b": ["blue"]}))
    with pytest.raises(FinetuneError, match="purple"):
        Trainer(**FAST, groups=bad_groups).fit(colours, out)
    with pytest.raises(FinetuneError, match="batch_size must be an integer >= 1"):
        Trainer(**{**FAST, "batch_size": 0})
    with pytest.raises(FinetuneError, match="unknown balance 'smote'"):
        Trainer(**FAST, balance="smote")
    assert not out.exists()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a task2vec fine-tuning checkpoint"):
        FinetunedModel.load(foreign)


def test_repeats_report_mean_and_std_and_records_feed_model2vec(colours, tmp_path):
    res = fit(colours, tmp_path / "rep", repeats=2, **{**FAST, "epochs": 1})
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    accs = [r.val_accuracy for r in res.runs]
    assert summary["seeds"] == 2 and summary["val"]["mean"]["accuracy"] == pytest.approx(np.mean(accs))
    assert summary["val"]["std"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    assert "val,accuracy," in (tmp_path / "rep" / "summary.csv").read_text()
    assert (tmp_path / "rep" / "seed-0" / "best.pt").is_file() and (tmp_path / "rep" / "seed-1" / "best.pt").is_file()
    # a transfer record names the task's embedding; read_records (MODEL2VEC's reader) accepts it
    from task2vec.embedding.embedding import Embedding

    emb = Embedding(np.ones(4), {"probe": {"name": "p", "weights_hash": "h", "input_size": 32},
                                 "method": {"name": "exact"}, "layers": [{"name": "a", "filters": 4}]})
    emb.save(tmp_path / "colours.t2v.npz")
    records = tmp_path / "records.csv"
    append_transfer_record(res.runs, records=records, embedding=tmp_path / "colours.t2v.npz")
    append_transfer_record(res.runs[:1], records=records, embedding=tmp_path / "colours.t2v.npz")  # replaces
    rec = read_records(records)
    assert len(rec) == 1 and rec.error[0] == pytest.approx(1 - res.runs[0].val_accuracy)
    with pytest.raises(RecordsError, match="needs the task's embedding"):
        append_transfer_record(res.runs, records=records)


# ---------------------------------------------------------------- the real thing: small_books, CLI
@pytest.mark.skipif(not WEIGHTS.is_file(), reason="needs ../shared")
def test_cli_finetune_predict_cam_on_small_books(tmp_path, capsys, monkeypatch):
    import task2vec.finetune.loaders as loaders_mod
    import task2vec.finetune.trainer as finetune_mod

    data = SHARED / "data" / "small_books"
    run = tmp_path / "books"
    used = {}  # what the trainer actually trains with: the augmentation of its train transform, the loss weights

    def spy_transform(config, aug):
        used["augment"] = aug
        return train_transform(config, aug)

    def spy_weights(labels, n_classes):
        used["class_weights"] = balanced_class_weights(labels, n_classes)
        return used["class_weights"]

    monkeypatch.setattr(loaders_mod, "train_transform", spy_transform)
    monkeypatch.setattr(finetune_mod, "balanced_class_weights", spy_weights)
    rc = main(["finetune", str(data), "-o", str(run), "--weights", str(WEIGHTS), "--image-size", "64",
               "--epochs", "2", "--augment", "strong", "--balance", "loss-weights", "--quiet", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "val accuracy" in out.out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["weights"] == str(WEIGHTS) and cfg["split_sizes"]["test"] == 0  # test/ is unlabelled
    assert used["augment"] == preset("strong") and cfg["params"]["augment"] == preset("strong").as_dict()
    assert cfg["params"]["balance"] == "loss-weights"
    w = used["class_weights"]  # 27 backgrounds against about 9 photos per book: the background weighs least
    assert w[cfg["classes"].index("background")] == w.min() and w.max() > 2 * w.min()
    photos = sorted((data / "test").glob("*.jpg"))[:2]
    rc = main(["predict", str(run / "best.pt"), *map(str, photos), "--topk", "3", "--json", str(tmp_path / "p.json")])
    assert rc == 0
    preds = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert len(preds) == 2 and len(preds[0]["top"]) == 3
    rc = main(["cam", str(run / "best.pt"), str(photos[0]), "-o", str(tmp_path / "cam.png")])
    assert rc == 0
    figure = np.asarray(Image.open(tmp_path / "cam.png").convert("RGB")).astype(float)
    assert figure.shape == (300, 600, 3)  # one row: the photo, then its heat map
    left, right = figure[:, :300], figure[:, 300:]
    assert np.abs(left - right).mean() > 10  # the overlay is not the photo
    heat = right - left
    assert heat.std() > 5 and np.ptp(heat[..., 0] - heat[..., 2]) > 50  # warm and cool regions: a map, not a tint
    capsys.readouterr()
    rc = main(["finetune", str(data), "-o", str(run), "--weights", str(WEIGHTS), "--quiet"])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err
    rc = main(["predict", str(run / "config.json"), str(photos[0])])
    assert rc == 2 and "not a task2vec checkpoint" in capsys.readouterr().err
    rc = main(["cam", str(run / "best.pt"), str(photos[0]), "-o", str(tmp_path / "c2.png"), "--target-class", "x"])
    assert rc == 2 and "unknown class 'x'" in capsys.readouterr().err


def test_a_timm_model_with_bicubic_preprocessing_fine_tunes_and_predicts(colours, tmp_path):
    res = Trainer(**{**FAST, "model": "resnet10t", "augment": "standard", "freeze": "until:layer2"}).fit(
        colours, tmp_path / "timm")
    cfg = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert cfg["arch"] == "resnet10t" and cfg["data_config"]["interpolation"] == "bicubic"
    assert cfg["frozen_parameters"] > 0 and len(res.history) == 2
    model = FinetunedModel.load(tmp_path / "timm" / "best.pt", device="cpu")
    assert model.arch == "resnet10t" and len(model.predict([Image.new("RGB", (40, 40), (200, 30, 30))])[0]) == 3


# ---------------------------------------------------------------- fine-tuning a zoo entry: its input size, its records
QUICK = ["--epochs", "1", "--max-train-images", "20", "--batch-size", "10", "--device", "cpu"]


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory, shared) -> Path:
    """A real two-entry zoo (probe at 64 px): an ants/bees entry whose weights were trained at 48 px
    (``zoo add --input-size``) and an X-ray entry at its architecture's own 224 px."""
    z = tmp_path_factory.mktemp("ftzoo") / "zoo"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "64"]) == 0
    for entry, source, extra in (("bees", "hymenoptera", ["--input-size", "48"]), ("xray", "pneumoniamnist", [])):
        assert main(["zoo", "add", str(z), "--id", entry, "--model", "mobilenet_v2", "--checkpoint", str(WEIGHTS),
                     "--source-dataset", str(shared / "data" / source), "--max-samples", "16", "--quiet",
                     "--weights", str(WEIGHTS), *extra]) == 0
    return z


def test_finetune_of_the_recommendation_trains_at_the_entry_input_size(small_zoo, shared, tmp_path, capsys):
    hym = shared / "data" / "hymenoptera"
    ranking = tmp_path / "ranking.json"
    assert main(["recommend", str(hym), "--zoo", str(small_zoo), "--json", str(ranking), "--quiet",
                 "--weights", str(WEIGHTS)]) == 0
    top = json.loads(ranking.read_text())["recommendations"][0]
    assert top["id"] == "bees" and top["input_size"] == 48
    capsys.readouterr()
    for extra, size, source, why in (([], 48, "entry", "the input size of entry bees"),
                                     (["--image-size", "40"], 40, "image_size", "image_size given")):
        run = tmp_path / f"run{size}"
        code = main(["finetune", str(hym), "--model", str(ranking), "-o", str(run), "--no-records", *QUICK, *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model_id"] == "bees" and cfg["data_config"]["input_size"] == size
        assert cfg["input_size_from"] == source
        assert load_checkpoint(run / "best.pt")["data_config"]["input_size"] == size  # what predict and cam use
        assert FinetunedModel.load(run / "best.pt", device="cpu").config.input_size == size
        assert f"fine-tuning bees (mobilenet_v2) at {size} px ({why})" in out


def test_every_form_of_a_zoo_model_carries_its_input_size(small_zoo, tmp_path, capsys):
    assert resolve_model(f"{small_zoo}:bees").input_size == 48
    assert resolve_model("bees", zoo=small_zoo).input_size == 48
    assert resolve_model("xray", zoo=small_zoo).input_size == 224  # the architecture's own size
    assert resolve_model("mobilenet_v2").input_size is None
    # a recommendation whose zoo is not on this machine: the size it lists
    far = {"zoo": str(tmp_path / "elsewhere"),
           "recommendations": [{"id": "far", "model": "mobilenet_v2", "input_size": 96, "weights": str(WEIGHTS),
                               "weights_available": True}]}
    (tmp_path / "far.json").write_text(json.dumps(far))
    choice = resolve_model(str(tmp_path / "far.json"))
    assert (choice.arch, choice.model_id, choice.weights, choice.input_size) == ("mobilenet_v2", "far", str(WEIGHTS), 96)
    far["recommendations"][0]["input_size"] = "large"
    (tmp_path / "bad.json").write_text(json.dumps(far))
    with pytest.raises(FinetuneError, match=r"entry 'far': input_size .*must be an integer"):
        resolve_model(str(tmp_path / "bad.json"))
    code = main(["finetune", str(tmp_path), "--model", str(tmp_path / "bad.json"), "-o", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_user_cache_location(monkeypatch, tmp_path, small_zoo):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TASK2VEC_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "task2vec"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "task2vec"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "task2vec"
    monkeypatch.setenv("TASK2VEC_CACHE", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"
    zoo = Zoo.load(small_zoo)
    copy = tmp_path / "copy"
    shutil.copytree(small_zoo, copy)
    key = zoo_key(zoo)
    assert key.startswith("zoo-") and key == zoo_key(Zoo.load(small_zoo)) != zoo_key(Zoo.load(copy))
    assert zoo_records(zoo) == tmp_path / "mine" / "records" / key / "records.csv"
    assert not (tmp_path / "mine").exists()  # nothing is made until a record is written


def test_finetune_records_go_to_the_user_cache_never_into_the_zoo(small_zoo, shared, tmp_path, capsys, monkeypatch):
    zoo_dir = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo_dir)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TASK2VEC_CACHE", str(cache))
    before = _tree(zoo_dir)
    hym = str(shared / "data" / "hymenoptera")
    code = main(["finetune", hym, "--model", f"{zoo_dir}:bees", "-o", str(tmp_path / "a"), "--quiet", *QUICK])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _tree(zoo_dir) == before  # no records.csv, no tasks/ in the zoo folder
    records = sorted(cache.rglob("records.csv"))
    assert len(records) == 1 and records[0].parent.parent == cache / "records"
    assert f"transfer record appended to {records[0]}" in out
    ids = Zoo.load(zoo_dir).ids
    rec = read_records(records[0], model_ids=ids)
    assert [rec.models[i] for i in rec.model_idx] == ["bees"]
    tasks = sorted((records[0].parent / "tasks").iterdir())
    assert len(tasks) == 1 and tasks[0].name.endswith(".t2v.npz")

    # a second entry on the same task reuses the cached task embedding
    code = main(["finetune", hym, "--zoo", str(zoo_dir), "--model", "xray", "--image-size", "40",
                 "-o", str(tmp_path / "b"), "--quiet", *QUICK])
    assert code == 0, capsys.readouterr().err
    rec = read_records(records[0], model_ids=ids)
    assert sorted(rec.models[i] for i in rec.model_idx) == ["bees", "xray"] and len(rec.tasks) == 1
    assert sorted((records[0].parent / "tasks").iterdir()) == tasks
    assert _tree(zoo_dir) == before

    # --records writes where it says, and only there
    cached = records[0].read_bytes()
    mine = tmp_path / "mine.csv"
    code = main(["finetune", hym, "--model", f"{zoo_dir}:bees", "-o", str(tmp_path / "c"), "--records", str(mine),
                 "--quiet", *QUICK])
    assert code == 0 and f"transfer record appended to {mine}" in capsys.readouterr().out
    assert [r["model"] for r in csv.DictReader(open(mine))] == ["bees"] and len(read_records(mine, model_ids=ids)) == 1
    assert records[0].read_bytes() == cached and _tree(zoo_dir) == before

    # fit-model2vec finds the zoo's records without being told where they are
    code = main(["zoo", "fit-model2vec", str(zoo_dir)])
    assert code == 0, capsys.readouterr().err
    info = Zoo.load(zoo_dir).manifest["model2vec"]
    assert info["records"] == str(records[0]) and info["n_records"] == 2


def test_fit_model2vec_without_records_is_one_line(small_zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TASK2VEC_CACHE", str(tmp_path / "empty"))
    before = _tree(small_zoo)
    code = main(["zoo", "fit-model2vec", str(small_zoo)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1
    assert "has no transfer records yet" in err and "--records CSV" in err
    assert _tree(small_zoo) == before and not (tmp_path / "empty").exists()
