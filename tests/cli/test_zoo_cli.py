"""`task2vec zoo ...` and `task2vec recommend` end to end: the real probe on real data."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from task2vec.cli.main import main
from task2vec.defaults import RECOMMEND_CHECK, RECOMMEND_FISHER_IMAGES, RECOMMEND_MAX_RANK
from task2vec.zoo.zoo import MANIFEST, Zoo

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--max-samples", "24", "--quiet", "--weights", str(WEIGHTS)]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared):
    """A two-entry zoo made through the CLI: an ants/bees expert and an X-ray expert."""
    z = tmp_path_factory.mktemp("cli") / "zoo"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    (z / "experts").mkdir()
    (z / "experts" / "insects.safetensors").symlink_to(WEIGHTS)  # a zoo's checkpoints lie inside it
    assert main(["zoo", "add", str(z), "--id", "insects", "--model", "mobilenet_v2", "--checkpoint",
                 "experts/insects.safetensors",
                 "--source-dataset", str(shared / "data" / "hymenoptera"), *FAST]) == 0
    assert main(["zoo", "add", str(z), "--id", "xray", "--model", "resnet18", "--pretrained",
                 "--source-dataset", str(shared / "data" / "pneumoniamnist"), *FAST]) == 0
    return z


def test_list_and_recommend(built, shared, tmp_path, capsys):
    code, out, _ = run(capsys, "zoo", "list", built)
    assert code == 0 and "insects" in out and "xray" in out and "2 entries" in out
    assert "69.758" in out  # resnet18's ImageNet top-1 came from the published tables

    code, out, err = run(capsys, "recommend", shared / "data" / "hymenoptera", "--zoo", built, "-k", "2",
                         "--json", tmp_path / "rec.json", *FAST)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2].split()[:2] == ["1", "insects"]  # same images, same labels: the insects expert first
    # a column only where it carries information: no biases, one known top-1 (no quality term), one input size
    header = lines[1].split()
    assert header[:4] == ["rank", "model", "id", "architecture"] and "LogME" in header and "params" in header
    assert not {"bias", "quality", "score", "px"} & set(header) and {"weights", "stable", "why"} <= set(header)
    data = json.loads((tmp_path / "rec.json").read_text())
    first = data["recommendations"][0]
    assert first["id"] == "insects" and first["rank"] == 1 and first["why"].startswith("trained on insects")
    assert {"score", "d_asym", "bias", "quality", "params_m", "input_size", "weights", "weights_available",
            "stable", "tied"} <= set(first)
    assert first["weights_available"] is True and first["weights"] == str(built / "experts" / "insects.safetensors")
    second = data["recommendations"][1]
    assert second["weights"] is None and second["weights_status"] == "downloadable"  # resnet18: no local file
    assert second["weights_available"] is False
    assert data["schema_version"] == 1 and data["probe"]["input_size"] == 112 and data["noise_half_split"] > 0
    assert data["settings"]["check"] == RECOMMEND_CHECK and data["settings"]["embedding"]["max_rank"] == RECOMMEND_MAX_RANK
    assert data["settings"]["embedding"].get("fisher_images") == RECOMMEND_FISHER_IMAGES
    assert data["checked"] == ["insects"]  # the first pick is the probe's own entry: its LogME is free
    written = json.loads((tmp_path / "rec.json").read_text(), parse_float=lambda x: x)  # floats as written
    assert not any(v in ("-0.0", "-0") for r in written["recommendations"] for v in r.values())

    # an existing embedding file is ranked without embedding anything
    assert main(["embed", str(shared / "data" / "pneumoniamnist"), "-o", str(tmp_path / "x.npz"), "--image-size", "112",
                 *FAST]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "recommend", tmp_path / "x.npz", "--zoo", built)
    assert code == 0 and out.splitlines()[2].split()[1] == "xray"


def test_bad_input_is_one_line_and_changes_nothing(built, shared, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in built.iterdir() if p.is_file()}
    hym = shared / "data" / "hymenoptera"
    cases = [
        ("zoo", "add", built, "--id", "insects", "--model", "resnet18", "--pretrained", "--source-dataset", hym, *FAST),
        ("zoo", "add", built, "--id", "x", "--model", "resnet18", "--pretrained", "--checkpoint", "a.pth",
         "--source-dataset", hym, *FAST),
        ("zoo", "add", built, "--id", "x", "--model", "resnet18", "--source-dataset", tmp_path / "nowhere", *FAST),
        ("zoo", "remove", built, "--id", "nope"),
        ("zoo", "init", built),
        ("zoo", "list", tmp_path / "not-a-zoo"),
        ("recommend", hym, "--zoo", built, "-k", "0", *FAST),
        ("recommend", tmp_path / "nowhere", "--zoo", built, *FAST),
        ("recommend", hym, "--zoo", built, "--json", tmp_path / "no" / "dir.json", *FAST),
        ("zoo", "set", built),
        ("zoo", "set", built, "--alpha", "-1"),
        ("zoo", "set", built, "--quality-weight", "nan"),
    ]
    for argv in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in built.iterdir() if p.is_file()} == before

    code, out, _ = run(capsys, "zoo", "set", built, "--alpha", str(Zoo.load(built).alpha))  # a no-op change
    assert code == 0 and "alpha" in out and "dropped" not in out and Zoo.load(built).ids == ["insects", "xray"]

    empty = tmp_path / "empty"
    assert main(["zoo", "init", str(empty), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    code, _, err = run(capsys, "recommend", hym, "--zoo", empty, *FAST)
    assert code == 2 and "empty" in err

    other = tmp_path / "other"  # a zoo made with the probe at another resolution refuses these embeddings
    assert main(["zoo", "init", str(other), "--weights", str(WEIGHTS), "--image-size", "96"]) == 0
    code, _, err = run(capsys, "zoo", "add", other, "--id", "x", "--model", "m", "--pretrained",
                       "--source-embedding", tmp_path / "nowhere.npz")
    assert code == 2


def test_build_from_spec_is_resumable(shared, tmp_path, capsys):
    spec = {
        "zoo": "built", "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 112,
        "embedding": {"method": "exact", "max_samples": 16},
        "entries": [
            {"id": "bees", "model": "mobilenet_v2", "checkpoint": "experts/bees.safetensors",
             "source_dataset": str(shared / "data" / "hymenoptera"), "metadata": {"notes": "t"}},
            {"id": "omniglot", "model": "resnet34", "pretrained": True, "label_column": "alphabet",
             "source_dataset": str(shared / "data" / "omniglot_small" / "labels.csv")},
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["zoo", "build", str(path), "--quiet"]) == 0
    capsys.readouterr()
    zoo = Zoo.load(tmp_path / "built")
    assert zoo.ids == ["bees", "omniglot"] and zoo.entry("omniglot").source["n_classes"] == 8
    w = zoo.weights(zoo.entry("bees"))
    assert w.path.endswith("experts/bees.safetensors") and w.status == "missing"
    manifest = (tmp_path / "built" / MANIFEST).read_bytes()
    code, out, _ = run(capsys, "zoo", "build", path, "--quiet")
    assert code == 0 and out.count("skipped") == 2 and (tmp_path / "built" / MANIFEST).read_bytes() == manifest

    path.write_text(yaml.safe_dump({**spec, "entries": spec["entries"] + [spec["entries"][0]]}))
    code, _, err = run(capsys, "zoo", "build", path)
    assert code == 2 and "duplicate" in err
    path.write_text("zoo: [unclosed")
    code, _, err = run(capsys, "zoo", "build", path)
    assert code == 2 and "YAML" in err


def test_build_trains_missing_experts_and_finetune_starts_from_a_zoo_entry(shared, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from task2vec.finetune.checkpoint import load_checkpoint

    spec = {
        "zoo": "z", "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 64,
        "embedding": {"method": "exact", "max_samples": 16},
        "finetune": {"from": str(WEIGHTS), "image_size": 32, "epochs": 1, "max_train_images": 12, "batch_size": 6},
        "entries": [{"id": "bees", "model": "mobilenet_v2", "checkpoint": "experts/bees.safetensors",
                     "source_dataset": str(shared / "data" / "hymenoptera"), "finetune": {"augment": "light"}}],
        "always_check": ["bees"],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "zoo": "untrained"}))
    code, out, err = run(capsys, "zoo", "build", path, "--quiet", "--no-train")  # sources embedded, nothing trained
    assert code == 0 and "training" not in out, err
    assert Zoo.load(tmp_path / "untrained").ids == ["bees"] and not (tmp_path / "untrained" / "runs").exists()
    assert Zoo.load(tmp_path / "untrained").weights(Zoo.load(tmp_path / "untrained").entry("bees")).status == "missing"
    path.write_text(yaml.safe_dump({**spec, "always_check": ["wasps"]}))
    code, _, err = run(capsys, "zoo", "build", path, "--quiet")
    assert code == 2 and "'always_check' must list ids of its entries, got ['wasps']" in err
    path.write_text(yaml.safe_dump(spec))
    code, out, err = run(capsys, "zoo", "build", path, "--quiet")
    assert code == 0, err
    assert Zoo.load(tmp_path / "z").always_check == ["bees"]
    expert = tmp_path / "z" / "experts" / "bees.safetensors"
    assert "training the expert" in out and expert.is_file()
    body = load_file(str(expert))
    best = load_checkpoint(tmp_path / "z" / "runs" / "bees" / "best.pt")["model_state"]
    assert body.keys() == {k[5:] for k in best if k.startswith("body.")}
    assert all((body[k] == best["body." + k]).all() for k in body)
    assert json.loads((tmp_path / "z" / "runs" / "bees" / "config.json").read_text())["params"]["augment"]["hflip"] == 0.5
    code, out, _ = run(capsys, "zoo", "build", path, "--quiet")  # nothing left to do
    assert code == 0 and "training" not in out
    monkeypatch.delenv("TASK2VEC_WEIGHTS", raising=False)
    args = ["finetune", shared / "data" / "hymenoptera", "--model", f"{tmp_path / 'z'}:bees", "--image-size", "32",
            "--epochs", "1", "--max-train-images", "8", "--quiet"]
    code, _, err = run(capsys, *args, "-o", tmp_path / "run")
    assert code == 2 and "needs the task embedded with the zoo's probe" in err and not (tmp_path / "run").exists()
    monkeypatch.setenv("TASK2VEC_WEIGHTS", str(WEIGHTS.parent))  # where the zoo's probe weights are
    code, out, err = run(capsys, *args, "-o", tmp_path / "run")
    assert code == 0, err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model_id"] == "bees" and cfg["weights"] == str(expert) and cfg["zoo"] == str(tmp_path / "z")
    # the run left a transfer record in the per-user cache (not in the zoo), naming the task's embedding made with
    # the zoo's probe
    from task2vec.zoo.cache import zoo_cache_dir
    from task2vec.zoo.records import read_records

    zoo = Zoo.load(tmp_path / "z")
    cache = zoo_cache_dir(zoo)
    rec = read_records(cache / "records.csv", model_ids=zoo.ids, like=None)
    assert len(rec) == 1 and rec.models[rec.model_idx[0]] == "bees" and len(list((cache / "tasks").iterdir())) == 1
    assert f"transfer record appended to {cache / 'records.csv'}" in out
    assert not (tmp_path / "z" / "records.csv").exists() and not (tmp_path / "z" / "tasks").exists()
    code, _, err = run(capsys, "finetune", shared / "data" / "hymenoptera", "-o", tmp_path / "run3", "--records",
                       tmp_path / "r.csv", "--quiet")
    assert code == 2 and "--records needs the task's embedding" in err and not (tmp_path / "run3").exists()
    code, _, err = run(capsys, "finetune", shared / "data" / "hymenoptera", "--zoo", tmp_path / "z", "--model", "wasps",
                       "-o", tmp_path / "run2")
    assert code == 2 and "no entry 'wasps'" in err


def small_folder(shared, root, n: int = 3):
    """n real ants and n real bees from hymenoptera, copied to ``root``."""
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for p in sorted((shared / "data" / "hymenoptera" / "train" / cls).iterdir())[:n]:
            shutil.copy(p, root / cls / p.name)
    return root


def test_build_records_sources_portably_and_derives_params_and_input_size(shared, tmp_path, capsys, monkeypatch):
    """From a working directory that is not the spec's, with TASK2VEC_SHARED relative (as the README exports it)."""
    work, proj = tmp_path / "work", tmp_path / "proj"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TASK2VEC_SHARED", os.path.relpath(shared, work))
    small_folder(shared, proj / "local" / "insects")  # beside the spec
    small_folder(shared, proj / "z" / "data" / "insects")  # inside the zoo folder
    for name in ("beside", "inside"):  # the experts exist: nothing is trained
        (proj / "z" / "experts").mkdir(parents=True, exist_ok=True)
        (proj / "z" / "experts" / f"{name}.safetensors").write_bytes(b"not read by the build")
    weights = "${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors"
    spec = {
        "zoo": "z", "probe": "mobilenet_v2", "weights": weights, "image_size": 64,
        "embedding": {"method": "exact", "max_samples": 8, "min_images_per_class": 4},
        "finetune": {"from": weights, "image_size": 48},
        "entries": [
            {"id": "generalist", "model": "mobilenet_v2", "checkpoint": weights, "label_column": "alphabet",
             "half": "source", "source_dataset": "${TASK2VEC_SHARED}/data/omniglot_small/labels.csv"},
            {"id": "beside", "model": "mobilenet_v2", "checkpoint": "experts/beside.safetensors",
             "source_dataset": "local/insects", "finetune": {"image_size": 40}},
            {"id": "inside", "model": "tf_efficientnet_lite0", "checkpoint": "experts/inside.safetensors",
             "source_dataset": "z/data/insects"},
            {"id": "pre", "model": "resnet18", "pretrained": True, "source_dataset": str(proj / "local" / "insects")},
        ],
    }
    (proj / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = run(capsys, "zoo", "build", "../proj/spec.yaml", "--quiet")
    assert code == 0, err
    assert "training" not in out
    manifest = json.loads((proj / "z" / MANIFEST).read_text())
    entries = {e["id"]: e for e in manifest["entries"]}
    assert entries["generalist"]["source"]["dataset"] == \
        "${TASK2VEC_SHARED}/data/omniglot_small/labels.csv:alphabet|half=source/0"
    assert entries["beside"]["source"]["dataset"] == "../local/insects"  # relative to the zoo folder
    assert entries["inside"]["source"]["dataset"] == "data/insects"
    assert entries["pre"]["source"]["dataset"] == str(proj / "local" / "insects")  # given absolute: kept
    assert str(tmp_path) not in json.dumps({k: e for k, e in entries.items() if k != "pre"})
    assert entries["generalist"]["checkpoint"] == weights  # kept as written
    meta = {k: (e["metadata"]["params_m"], e["metadata"]["input_size"]) for k, e in entries.items()}
    assert meta == {"generalist": (3.5, 224), "beside": (3.5, 40), "inside": (4.65, 48), "pre": (11.69, 224)}
    # min_images_per_class: recorded by the zoo, 8 alphabets x 4 images although max_samples is 8
    assert manifest["embedding_settings"]["min_images_per_class"] == 4
    assert entries["generalist"]["source"]["n_images"] == 32
    assert entries["generalist"]["source"]["method"]["min_images_per_class"] == 4
    zoo = Zoo.load(proj / "z")
    from task2vec import Probe

    probe = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=64, device="cpu")
    assert zoo.embedder(probe).min_images_per_class == 4
    assert zoo.weights(zoo.entry("generalist")) == (str(WEIGHTS.resolve()), "local")

    spec["entries"][1]["metadata"] = {"input_size": 112}
    (proj / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = run(capsys, "zoo", "build", "../proj/spec.yaml")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "metadata 'input_size' is derived" in err


def test_build_with_an_unset_variable_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASK2VEC_SHARED", raising=False)
    spec = ROOT / "zoo" / "demo" / "spec.yaml"
    code, out, err = run(capsys, "zoo", "build", spec)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("task2vec: error: ") and "environment variable TASK2VEC_SHARED is not set" in err
    assert str(spec) in err and list(tmp_path.iterdir()) == []


def test_zoo_add_derives_params_and_records_a_relative_source_relative_to_the_zoo(shared, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_folder(shared, tmp_path / "data" / "insects")
    assert main(["zoo", "init", "zoos/z", "--weights", str(WEIGHTS), "--image-size", "64"]) == 0
    add = ["zoo", "add", "zoos/z", "--model", "tf_efficientnet_lite1", "--checkpoint", "experts/x.safetensors",
           "--source-dataset", "data/insects", *FAST]
    code, _, err = run(capsys, *add, "--id", "x", "--params-m", "5.4")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--params-m is derived from --model" in err
    code, _, err = run(capsys, *add, "--id", "x", "--input-size", "0")
    assert code == 2 and "input_size must be a positive integer" in err
    assert run(capsys, *add, "--id", "x")[0] == 0
    assert run(capsys, *add, "--id", "y", "--input-size", "96")[0] == 0
    zoo = Zoo.load("zoos/z")
    assert [(e.metadata["params_m"], e.metadata["input_size"]) for e in zoo.entries] == [(5.42, 240), (5.42, 96)]
    assert zoo.entry("x").source["dataset"] == "../../data/insects"
    assert Path(zoo.path / zoo.entry("x").source["dataset"]).resolve() == tmp_path / "data" / "insects"


def test_verify_says_ok_or_lists_every_problem(built, shared, tmp_path, capsys):
    z = tmp_path / "z"
    shutil.copytree(built, z, symlinks=True)
    code, out, err = run(capsys, "zoo", "verify", z)
    assert (code, out, err) == (0, f"zoo {z}: OK (2 entries)\n", "")

    mpath = z / MANIFEST
    good = mpath.read_text()
    mpath.write_text(json.dumps({**json.loads(good), "alpha": 5.0}, indent=1))  # the hand edit of issue 20
    code, out, err = run(capsys, "zoo", "verify", z)
    assert code == 2 and err == f"task2vec: error: zoo {z}: 1 problem(s) found\n"
    assert out == (f"problem: zoo manifest {str(mpath)!r} was edited by hand (its checksum does not match): undo the "
                   "edit; 'task2vec zoo set' changes the settings, 'zoo add' and 'zoo remove' the entries\n")
    for argv in (("zoo", "list", z), ("recommend", shared / "data" / "hymenoptera", "--zoo", z, *FAST)):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err == (f"task2vec: error: zoo manifest {str(mpath)!r} was edited by hand "
                                                   f"(its checksum does not match): run 'task2vec zoo verify {z}' "
                                                   "to see what is wrong\n")

    mpath.write_text(good)
    code, out, _ = run(capsys, "zoo", "set", z, "--alpha", "5")  # the way to change it
    assert code == 0 and Zoo.load(z).alpha == 5.0
    (z / "experts" / "insects.safetensors").unlink()  # not built here: a note, not a problem
    code, out, err = run(capsys, "zoo", "verify", z)
    assert code == 0 and err == "" and out.splitlines() == [
        f"note: entry 'insects': weights file {str(z / 'experts' / 'insects.safetensors')!r} is not here "
        "('task2vec zoo build' trains or fetches it)", f"zoo {z}: OK (2 entries)"]
    code, out, err = run(capsys, "zoo", "verify", tmp_path / "nowhere")
    assert code == 2 and out.startswith("problem: ") and "is not a zoo" in out and "1 problem(s) found" in err



def test_a_random_init_zoo_receives_entries_and_recommends(shared, tmp_path, capsys):
    """`zoo init --random-init` records the seed of its probe, so `zoo add` and `recommend` rebuild it."""
    z = tmp_path / "random"
    assert main(["zoo", "init", str(z), "--random-init", "--probe", "resnet18", "--image-size", "32"]) == 0
    assert Zoo.load(z).probe["random_init_seed"] == 0
    small = ["--max-samples", "8", "--min-images-per-class", "4", "--quiet"]
    for entry, data in (("ants", "hymenoptera"), ("flowers", "flowers5")):
        assert main(["zoo", "add", str(z), "--id", entry, "--model", "resnet18", "--source-dataset",
                     str(shared / "data" / data), *small]) == 0
    code, out, err = run(capsys, "recommend", shared / "data" / "hymenoptera", "--zoo", z, "--check", "0", *small)
    assert code == 0, err
    assert out.splitlines()[2].split()[1] in {"ants", "flowers"}
