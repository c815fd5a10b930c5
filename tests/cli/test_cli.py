"""CLI tests through ``task2vec.cli.main.main([...])`` on tiny generated datasets with a random-init probe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import task2vec
from task2vec import Embedding, EmbeddingFileError, Probe, WeightsError
from task2vec.cli.main import main
from task2vec.data import load_task
from task2vec.backbones.probe import OFFLINE_ENV, WEIGHTS_ENV, host_reachable, state_dict_hash

FAST = ["--random-init", "--probe", "resnet18", "--image-size", "32", "--max-samples", "8",
        "--batch-size", "4", "--quiet", "--device", "cpu"]
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220)}


# ----------------------------------------------------------------------------- fixtures and helpers
pytestmark = pytest.mark.usefixtures("one_torch_thread", "cli_warnings")


def make_dataset(root: Path, n: int = 4) -> Path:
    """2 classes x n images, 40x40 RGB PNGs, a different colour (plus a little noise) per class."""
    rng = np.random.default_rng(0)
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = np.clip(np.array(colour) + rng.integers(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.png")
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "colours")


@pytest.fixture
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png " * 4)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_error(rc: int, err: str, outdir: Path, *fragments: str) -> str:
    """Exit 2, one stderr line ``task2vec: error: ...`` naming the problem, nothing left in ``outdir``."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("task2vec: error: ")
    for f in fragments:
        assert f in lines[0], lines[0]
    assert os.listdir(outdir) == []  # no output file, no temp file
    return lines[0]


# ----------------------------------------------------------------------------- success
def test_embed_writes_npz_and_summary(capsys, dataset, outdir):
    out_file = outdir / "colours.npz"
    rc, out, err = run(capsys, "embed", dataset, "-o", out_file, *FAST)
    assert rc == 0, err
    assert err == ""
    assert os.listdir(outdir) == ["colours.npz"]  # atomic write left no temp file
    lines = out.strip().splitlines()
    assert len(lines) == 1
    summary = lines[0]
    assert summary.startswith("embedded ")
    for fragment in ("8 images", "2 classes", "probe resnet18", "(32 px)", "method exact", str(out_file)):
        assert fragment in summary, summary

    emb = Embedding.load(out_file)
    m = emb.meta
    assert emb.probe == "resnet18" and m["probe"]["name"] == "resnet18"
    assert emb.method == "exact" and m["method"]["name"] == "exact"
    assert m["n_images"] == 8 and m["n_classes"] == 2 and m["n_skipped_images"] == 0
    assert m["classes"] == ["blue", "red"]
    assert m["probe"]["input_size"] == 32
    assert sum(layer["filters"] for layer in m["layers"]) == len(emb.vector)
    assert m["layers"][0]["name"] == "conv1"
    assert f"{len(emb.vector)} filters" in summary
    assert m["dataset"]["fingerprint"] == load_task(dataset).fingerprint()
    expected = Probe.create("resnet18", random_init=True, seed=0, device="cpu")
    assert m["probe"]["weights_hash"] == expected.weights_hash
    assert m["probe"]["weights_source"] == "random-init(seed=0)"
    assert np.isfinite(emb.vector).all() and (emb.vector >= 0).all() and emb.vector.sum() > 0
    assert emb.domain_mean is not None and emb.domain_mean.shape == (512,)
    # The head is a MAP fit under a unit Gaussian prior: its penalty per image is 1/n.
    assert m["method"]["head_prior"] == 1.0 and m["head"]["l2"] == pytest.approx(1 / 8)


def test_embed_is_reproducible_and_default_output_name(capsys, dataset, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, out, err = run(capsys, "embed", dataset, *FAST)  # no -o: <dataset>.t2v.npz in the cwd
    assert rc == 0, err
    assert os.listdir(work) == ["colours.t2v.npz"]
    rc, out, err = run(capsys, "embed", dataset, "-o", "again.npz", *FAST)
    assert rc == 0, err
    a, b = Embedding.load(work / "colours.t2v.npz"), Embedding.load(work / "again.npz")
    assert np.array_equal(a.vector, b.vector)


def test_second_embed_to_the_same_output_is_refused_at_once_unless_forced(capsys, dataset, outdir, monkeypatch):
    same = outdir / "same.npz"
    rc, _, err = run(capsys, "embed", dataset, "-o", same, *FAST)
    assert rc == 0, err
    before = (same.read_bytes(), same.stat().st_mtime_ns)
    with monkeypatch.context() as mp:  # it fails fast: no dataset is read, no probe is built
        mp.setattr(task2vec.data, "load_task", lambda *a, **k: pytest.fail("dataset read"))
        mp.setattr(Probe, "create", classmethod(lambda cls, *a, **k: pytest.fail("probe built")))
        rc, out, err = run(capsys, "embed", dataset, "-o", same, *FAST)
    assert rc == 2 and out == ""
    assert err == f"task2vec: error: output file '{same}' exists: pass --force to replace it\n"
    assert (same.read_bytes(), same.stat().st_mtime_ns) == before and os.listdir(outdir) == ["same.npz"]
    rc, out, err = run(capsys, "embed", dataset, "-o", same, *FAST, "--force")
    assert rc == 0, err
    assert same.stat().st_mtime_ns != before[1] and os.listdir(outdir) == ["same.npz"]
    assert Embedding.load(same).meta["n_images"] == 8


def test_force_is_offered_by_every_command_that_writes_a_file_and_said_in_the_help(capsys):
    def help_of(*command: str) -> str:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    for command in ("embed", "distance", "map", "recommend", "predict", "cam"):
        assert "--force replace existing output files (default: refuse)" in help_of(command), command
    for command in (("zoo", "add"), ("zoo", "build"), ("zoo", "init")):  # a zoo folder is updated in place
        assert "--force" not in help_of(*command), command
    assert "refuses to replace an existing one, before any work, unless given --force" in help_of()


def test_version_and_help_exit_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert f"task2vec {task2vec.__version__}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["embed", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--max-bad-fraction" in text and "--random-init" in text and "--label-column" in text


def test_failed_write_leaves_previous_output_intact_and_no_temp_file(capsys, dataset, outdir, monkeypatch):
    out_file = outdir / "x.npz"
    rc, _, err = run(capsys, "embed", dataset, "-o", out_file, *FAST)
    assert rc == 0, err
    before = out_file.read_bytes()

    def disk_full(file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    rc = main(["embed", str(dataset), "-o", str(out_file), *FAST, "--seed", "1", "--force"])
    assert rc == 2 and "No space left on device" in capsys.readouterr().err
    assert os.listdir(outdir) == ["x.npz"]  # the temp file was removed
    assert out_file.read_bytes() == before  # the old result was not half-overwritten


# ----------------------------------------------------------------------------- bad inputs: exit 2, one line, no file
def test_nonexistent_dataset(capsys, tmp_path, outdir):
    rc, _, err = run(capsys, "embed", tmp_path / "no_such_dataset", "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "does not exist", "no_such_dataset")


def test_empty_folder(capsys, tmp_path, outdir):
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "embed", tmp_path / "empty", "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "no class sub-folders")


@pytest.mark.parametrize("value, message", [("0", "head_prior must be a positive number"),
                                            ("-1", "head_prior must be a positive number"),
                                            ("nan", "--head-prior must be a finite number, got nan")])
def test_head_prior_must_be_positive(capsys, dataset, outdir, value, message):
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--head-prior", value)
    assert_error(rc, err, outdir, message)


def test_min_images_per_class_flag(capsys, dataset, outdir):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert "least K images per class, above --max-samples if need be (default: 10)" in " ".join(capsys.readouterr().out.split())
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--min-images-per-class", "0")
    assert_error(rc, err, outdir, "min_images_per_class must be an integer >= 1")
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--max-samples", "2",
                     "--min-images-per-class", "3")
    assert rc == 0, err
    m = Embedding.load(outdir / "x.npz").meta
    assert m["n_images"] == 6 and m["method"]["min_images_per_class"] == 3


def test_head_prior_sets_the_penalty(capsys, dataset, outdir):
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--head-prior", "4")
    assert rc == 0, err
    m = Embedding.load(outdir / "x.npz").meta
    assert m["method"]["head_prior"] == 4.0 and m["head"]["l2"] == pytest.approx(4 / 8)


def test_single_class(capsys, tmp_path, outdir):
    root = make_dataset(tmp_path / "ds")
    for f in (root / "blue").iterdir():
        f.unlink()
    (root / "blue").rmdir()
    rc, _, err = run(capsys, "embed", root, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "at least 2 classes", "red")


def test_class_without_image_files(capsys, dataset, outdir):
    (dataset / "green").mkdir()
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "class 'green'", "no image files")


def test_class_with_no_readable_images(capsys, dataset, outdir):
    for f in (dataset / "blue").iterdir():
        corrupt(f)
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "4 of 8 images could not be read", "blue")


def test_class_with_no_readable_images_under_a_lenient_threshold(capsys, dataset, outdir):
    for f in (dataset / "blue").iterdir():
        corrupt(f)
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--max-bad-fraction", "0.5")
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("task2vec: error: ") and "class 'blue' has no readable images" in lines[-1]
    assert sum(line.startswith("task2vec: error:") for line in lines) == 1
    assert os.listdir(outdir) == []


def test_csv_missing_columns(capsys, dataset, outdir):
    f = dataset.parent / "t.csv"
    f.write_text("picture,kind\nred/0.png,red\nblue/0.png,blue\n")
    rc, _, err = run(capsys, "embed", f, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "has no path column")


def test_csv_several_label_columns(capsys, dataset, outdir):
    f = dataset / "t.csv"
    f.write_text("path,colour,shade\nred/0.png,red,a\nblue/0.png,blue,b\n")
    rc, _, err = run(capsys, "embed", f, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "several label columns", "--label-column")


def test_csv_naming_missing_files(capsys, dataset, outdir):
    f = dataset / "t.csv"
    f.write_text("path,label\nred/0.png,red\nblue/0.png,blue\nblue/99.png,blue\n")
    rc, _, err = run(capsys, "embed", f, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "missing file", "blue/99.png")


def test_csv_path_escaping_its_folder(capsys, dataset, outdir):
    sub = dataset / "red"
    f = sub / "t.csv"  # next to red/*.png; ../blue/0.png exists but is outside the CSV's folder
    f.write_text("path,label\n0.png,red\n../blue/0.png,blue\n")
    rc, _, err = run(capsys, "embed", f, "-o", outdir / "x.npz", *FAST)
    assert_error(rc, err, outdir, "escapes the CSV's folder", "../blue/0.png")


def test_csv_embeds_with_label_column(capsys, dataset, outdir):
    rows = [f"{c}/{i}.png,{c},{'odd' if i % 2 else 'even'}" for c in COLOURS for i in range(4)]
    f = dataset / "t.csv"
    f.write_text("path,colour,parity\n" + "\n".join(rows) + "\n")
    rc, out, err = run(capsys, "embed", f, "-o", outdir / "p.npz", *FAST, "--label-column", "parity")
    assert rc == 0, err
    emb = Embedding.load(outdir / "p.npz")
    assert emb.meta["classes"] == ["even", "odd"] and emb.meta["n_images"] == 8


def test_output_directory_does_not_exist(capsys, dataset, tmp_path, monkeypatch):
    built = []
    # the output is checked before any expensive work: no probe is built
    monkeypatch.setattr(Probe, "create", classmethod(lambda cls, *a, **k: built.append(a) or pytest.fail("built")))
    target = tmp_path / "missing_dir" / "x.npz"
    rc, _, err = run(capsys, "embed", dataset, "-o", target, *FAST)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("task2vec: error: ")
    assert "output directory" in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "missing_dir").exists()
    assert built == []


def test_output_path_is_a_directory(capsys, dataset, outdir):
    (outdir / "taken.npz").mkdir()
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "taken.npz", *FAST)
    assert rc == 2 and err.startswith("task2vec: error: ") and "is a directory" in err
    assert os.listdir(outdir) == ["taken.npz"] and os.listdir(outdir / "taken.npz") == []


def test_unknown_probe(capsys, dataset, outdir):
    args = [a if a != "resnet18" else "no_such_net_xyz" for a in FAST]
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *args)
    assert_error(rc, err, outdir, "unknown probe 'no_such_net_xyz'")


def test_weights_file_does_not_exist(capsys, dataset, outdir, tmp_path):
    args = [a for a in FAST if a != "--random-init"]
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *args, "--weights", tmp_path / "nope.pth")
    assert_error(rc, err, outdir, "weights file", "nope.pth", "does not exist")


def test_weights_file_unreadable(capsys, dataset, outdir, tmp_path):
    bad = tmp_path / "resnet18_bad.pth"
    bad.write_bytes(b"garbage, not a checkpoint")
    args = [a for a in FAST if a != "--random-init"]
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *args, "--weights", bad)
    assert_error(rc, err, outdir, "resnet18_bad.pth' is not a weights file")


# ----------------------------------------------------------------------------- unreadable images
def test_one_truncated_image_tolerated_with_warning(capsys, dataset, outdir):
    truncate(dataset / "red" / "2.png")
    rc, out, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST, "--max-bad-fraction", "0.5")
    assert rc == 0, err
    assert "skipped 1" in err
    assert "task2vec: warning: skipped 1 of 8" in err and "2.png" in err
    assert "7 images" in out
    emb = Embedding.load(outdir / "x.npz")
    assert emb.meta["n_images"] == 7 and emb.meta["n_skipped_images"] == 1
    assert os.listdir(outdir) == ["x.npz"]


def test_one_corrupt_image_fails_under_default_threshold(capsys, dataset, outdir):
    corrupt(dataset / "blue" / "1.png")
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *FAST)
    line = assert_error(rc, err, outdir, "1 of 8 images could not be read", "limit 5%")
    assert "1.png" in line


# ----------------------------------------------------------------------------- weights lookup
@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        state = torchvision.models.resnet18().state_dict()
    torch.save(state, d / "resnet18_test.pth")
    return d, state_dict_hash(state)


def test_no_weights_and_no_download_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # an empty folder
    with pytest.raises(WeightsError, match="--weights") as info:
        Probe.create("resnet18", pretrained=False, device="cpu")
    assert WEIGHTS_ENV in str(info.value) and "resnet18" in str(info.value)
    monkeypatch.delenv(WEIGHTS_ENV)
    with pytest.raises(WeightsError, match="--weights"):
        Probe.create("resnet18", pretrained=False, device="cpu")


def test_weights_found_through_environment(weights_dir, monkeypatch):
    d, expected_hash = weights_dir
    monkeypatch.setenv(WEIGHTS_ENV, str(d))
    probe = Probe.create("resnet18", pretrained=False, device="cpu")
    assert probe.weights_source.endswith("resnet18_test.pth")
    assert probe.weights_hash == expected_hash
    assert probe.weights_hash != Probe.create("resnet18", random_init=True, device="cpu").weights_hash


def test_weights_of_a_similarly_named_model_are_not_taken(tmp_path, monkeypatch):
    (tmp_path / "resnet18d.pth").write_bytes(b"")  # another architecture: must not match "resnet18"
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError, match="no weights for 'resnet18'"):
        Probe.create("resnet18", pretrained=False, device="cpu")


def test_cli_uses_weights_from_environment(capsys, dataset, outdir, weights_dir, monkeypatch):
    d, expected_hash = weights_dir
    monkeypatch.setenv(WEIGHTS_ENV, str(d))
    args = [a for a in FAST if a != "--random-init"]
    rc, out, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *args)
    assert rc == 0, err
    probe = Embedding.load(outdir / "x.npz").meta["probe"]
    assert probe["weights_source"].endswith("resnet18_test.pth")
    assert probe["weights_hash"] == expected_hash


def test_cli_download_failure_is_a_clean_error(capsys, dataset, outdir, tmp_path, monkeypatch):
    """No --weights, no --random-init, nothing in $TASK2VEC_WEIGHTS, and the download fails (offline)."""
    empty = tmp_path / "empty_weights"
    empty.mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(empty))
    real = torchvision.models.resnet18
    downloads = []

    def offline_resnet18(*args, weights=None, **kwargs):
        if weights is not None:
            downloads.append(weights)
            raise ConnectionError("network is unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(torchvision.models, "resnet18", offline_resnet18)
    monkeypatch.setattr(task2vec.backbones.probe, "host_reachable", lambda *a, **k: True)  # the host answers; the download fails
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # nothing in torch.hub's cache
    for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    args = [a for a in FAST if a != "--random-init"]
    rc, _, err = run(capsys, "embed", dataset, "-o", outdir / "x.npz", *args)
    assert downloads  # the download was attempted
    assert_error(rc, err, outdir, "download failed", "ConnectionError", "--weights", WEIGHTS_ENV)


def test_offline_cli_refuses_a_timm_download_at_once(shared, tmp_path):
    """HF_HUB_OFFLINE=1, no local weights and empty caches: one error line naming the model and how
    to give weights, not the hub's retry loop and its traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", WEIGHTS_ENV: str(empty), "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": str(Path(task2vec.__file__).parents[1])}
    out = tmp_path / "x.npz"
    proc = subprocess.run([sys.executable, "-m", "task2vec", "embed", str(shared / "data" / "hymenoptera"),
                           "--probe", "resnet10t", "-o", str(out), "--quiet", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("task2vec: error: no local weights for 'resnet10t' and no download (HF_HUB_OFFLINE is set")
    assert "--weights FILE" in lines[0] and WEIGHTS_ENV in lines[0]
    assert not out.exists()


def test_offline_variable_refuses_a_torchvision_download(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # an empty folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsError, match=rf"'resnet34' and no download \({OFFLINE_ENV} is set\).*--weights FILE"):
        Probe.create("resnet34", device="cpu")


def test_offline_timm_download_leaves_the_hub_online_setting_alone(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setenv(OFFLINE_ENV, "yes")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(WeightsError, match="'resnet10t' and no download .*not in the Hugging Face cache"):
        Probe.create("resnet10t", device="cpu")
    assert constants.HF_HUB_OFFLINE == before  # offline only for our own attempt


def test_host_reachable_on_loopback():
    """A closed port answers False without waiting out the timeout; a listening one answers True."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert host_reachable("127.0.0.1", server.getsockname()[1], timeout=2.0)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]  # bound, never listening: connections are refused
            start = time.monotonic()
            assert not host_reachable("127.0.0.1", closed, timeout=2.0)
            assert time.monotonic() - start < 2.0


# ----------------------------------------------------------------------------- Embedding.load on non-embeddings
def test_load_non_embedding_npz(tmp_path):
    f = tmp_path / "random.npz"
    np.savez(f, a=np.random.rand(5), b=np.arange(3))
    with pytest.raises(EmbeddingFileError, match="not a task2vec embedding file"):
        Embedding.load(f)


def test_load_text_file(tmp_path):
    f = tmp_path / "notes.npz"
    f.write_text("just some text\n")
    with pytest.raises(EmbeddingFileError, match="not a readable task2vec embedding file"):
        Embedding.load(f)


def test_load_missing_path(tmp_path):
    with pytest.raises(EmbeddingFileError, match="does not exist"):
        Embedding.load(tmp_path / "gone.npz")


def test_load_truncated_embedding(tmp_path):
    f = Embedding(np.ones(10), {"probe": {"name": "x"}}).save(tmp_path / "e.npz")
    assert Embedding.load(f).vector.tolist() == [1.0] * 10
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(EmbeddingFileError):
        Embedding.load(f)
