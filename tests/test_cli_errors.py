"""The CLI end to end on tiny data: success, and every bad input -> exit 2, one line, no file."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from task2vec import Embedding, EmbeddingFileError, Probe, WeightsError
from task2vec.cli import main

FAST = ["--random-init", "--probe", "resnet18", "--image-size", "32", "--max-samples", "8",
        "--batch-size", "4", "--quiet"]


def make_folder(root, n=4, classes=("red", "blue")):
    for c, color in zip(classes, ((220, 30, 30), (30, 30, 220))):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (40, 40), tuple(max(0, v - 20 * i) for v in color)).save(root / c / f"{i}.png")
    return root


def run_fail(capsys, argv, out, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("task2vec: error:"), err
    assert message in err[0], err[0]
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_embed_writes_file_and_summary(tmp_path, capsys):
    data = make_folder(tmp_path / "ds")
    out = tmp_path / "o" / "e.npz"
    out.parent.mkdir()
    assert main(["embed", str(data), "-o", str(out), *FAST]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("embedded") and "8 images, 2 classes, probe resnet18" in line
    e = Embedding.load(out)
    assert e.meta["probe"]["name"] == "resnet18" and e.meta["n_images"] == 8 and e.meta["n_classes"] == 2
    assert e.meta["method"]["name"] == "exact" and len(e.meta["layers"]) == 20
    assert len(e.vector) == sum(layer["filters"] for layer in e.meta["layers"])
    assert e.meta["dataset"]["fingerprint"] and e.domain_mean.shape == (512,)
    assert [p.name for p in out.parent.iterdir()] == ["e.npz"]


@pytest.mark.parametrize("method", ["montecarlo", "empirical", "variational"])
def test_every_method_runs(tmp_path, method):
    data = make_folder(tmp_path / "ds")
    assert main(["embed", str(data), "-o", str(tmp_path / "e.npz"), "--method", method, *FAST]) == 0
    assert Embedding.load(tmp_path / "e.npz").method == method


def test_version_and_help(capsys):
    for argv in (["--version"], ["embed", "--help"], ["distance", "--help"], ["map", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "task2vec 0." in capsys.readouterr().out


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out.npz"
    run_fail(capsys, ["embed", str(tmp_path / "nope"), "-o", str(out), *FAST], out, "does not exist")
    (tmp_path / "empty").mkdir()
    run_fail(capsys, ["embed", str(tmp_path / "empty"), "-o", str(out), *FAST], out, "no class sub-folders")
    single = make_folder(tmp_path / "single", classes=("red",))
    run_fail(capsys, ["embed", str(single), "-o", str(out), *FAST], out, "at least 2 classes")
    corrupt = make_folder(tmp_path / "corrupt")
    for p in (corrupt / "blue").iterdir():
        p.write_bytes(b"not an image")
    run_fail(capsys, ["embed", str(corrupt), "-o", str(out), *FAST, "--max-bad-fraction", "0.6"], out,
             "class 'blue' has no readable images")
    data = make_folder(tmp_path / "ds")
    (tmp_path / "ds" / "t.csv").write_text("picture,kind\nred/0.png,a\n")
    run_fail(capsys, ["embed", str(data / "t.csv"), "-o", str(out), *FAST], out, "no path column")
    (tmp_path / "ds" / "m.csv").write_text("path,label\nred/0.png,a\nred/9.png,b\n")
    run_fail(capsys, ["embed", str(data / "m.csv"), "-o", str(out), *FAST], out, "missing file")
    (tmp_path / "ds" / "x.csv").write_text("path,label\nred/0.png,a\n../../etc/passwd,b\n")
    run_fail(capsys, ["embed", str(data / "x.csv"), "-o", str(out), *FAST], out, "escapes the CSV's folder")
    bad_out = tmp_path / "no_dir" / "e.npz"
    run_fail(capsys, ["embed", str(data), "-o", str(bad_out), *FAST], bad_out, "does not exist")
    run_fail(capsys, ["embed", str(data), "-o", str(out), *FAST[:1], "--probe", "no_such_net"], out, "unknown probe")
    run_fail(capsys, ["embed", str(data), "-o", str(out), "--weights", str(tmp_path / "w.pth"), "--quiet"], out,
             "does not exist")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    run_fail(capsys, ["embed", str(data), "-o", str(out), "--weights", str(tmp_path / "junk.pth"), "--quiet"], out,
             "cannot read weights")


def test_unreadable_images_are_skipped_up_to_a_threshold(tmp_path, capsys):
    data = make_folder(tmp_path / "ds")
    (data / "red" / "0.png").write_bytes((data / "red" / "0.png").read_bytes()[:40])  # truncated
    out = tmp_path / "e.npz"
    run_fail(capsys, ["embed", str(data), "-o", str(out), *FAST], out, "1 of 8 images could not be read")
    with pytest.warns(UserWarning, match="skipped 1 of 8 unreadable images"):
        assert main(["embed", str(data), "-o", str(out), *FAST, "--max-bad-fraction", "0.5"]) == 0
    assert Embedding.load(out).meta["n_skipped_images"] == 1


def test_weights_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("TASK2VEC_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="--weights"):
        Probe.create("resnet18", pretrained=False)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18_test.pth")
    probe = Probe.create("resnet18", pretrained=False, image_size=32)
    assert probe.weights_source.endswith("resnet18_test.pth")
    with pytest.raises(WeightsError, match="does not fit probe"):
        Probe.create("resnet34", weights=tmp_path / "resnet18_test.pth")


def test_loading_non_embeddings(tmp_path):
    np.savez(tmp_path / "r.npz", a=np.zeros(3))
    (tmp_path / "t.npz").write_text("text")
    for path, message in ((tmp_path / "r.npz", "not a task2vec embedding"),
                          (tmp_path / "t.npz", "not a readable"), (tmp_path / "none.npz", "does not exist")):
        with pytest.raises(EmbeddingFileError, match=message):
            Embedding.load(path)


def test_distance_and_map_commands(tmp_path, capsys):
    files = []
    for i, n in enumerate((3, 4, 5, 6, 4, 5)):
        data = make_folder(tmp_path / f"d{i}", n=n)
        files.append(str(tmp_path / f"task{i}.t2v.npz"))
        assert main(["embed", str(data), "-o", files[-1], *FAST]) == 0
    capsys.readouterr()
    assert main(["distance", *files[:3], "--csv", str(tmp_path / "d.csv")]) == 0
    printed = capsys.readouterr().out
    assert "task0" in printed and "0.0000" in printed
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0] == "task,task0,task1,task2" and len(rows) == 4
    (tmp_path / "labels.csv").write_text("file,name,group\n" + "".join(
        f"task{i}.t2v.npz,T{i},{'ab'[i % 2]}\n" for i in range(6)))
    out = tmp_path / "map.png"
    assert main(["map", *files, "-o", str(out), "--labels", str(tmp_path / "labels.csv"), "--color-by", "group"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "map.csv").read_text().splitlines()[1].startswith("T0,")
    assert "<title>T0" in (tmp_path / "map.html").read_text()
    assert main(["map", *files[:3], "-o", str(tmp_path / "small.png")]) == 0
    assert "used classical MDS" in capsys.readouterr().err
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, a=np.zeros(2))
    run_fail(capsys, ["distance", files[0], str(bogus)], tmp_path / "never", "not a task2vec embedding")
