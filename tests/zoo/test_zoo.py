"""The zoo: manifest + arrays on disk, atomic changes, refusals, and the ranking it gives."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from task2vec import Embedding, IncompatibleEmbeddingsError, ZooError
from task2vec.space.distance import asymmetric, complexity
from task2vec.zoo.zoo import MANIFEST, Zoo, ZooEntry

ROOT = Path(__file__).resolve().parents[2]
PROBE = {"name": "mobilenet_v2", "weights_hash": "abc123", "input_size": 112}
DIM = 40


def emb(seed: int, name: str = "task", probe=PROBE, method="exact", dim=DIM, zeros: float = 0.05) -> Embedding:
    rng = np.random.default_rng(seed)
    v = rng.lognormal(-3, 1.5, dim)
    v[rng.random(dim) < zeros] = 0.0
    return Embedding(v, {"name": name, "probe": dict(probe), "method": {"name": method}, "n_classes": 3, "n_images": 30})


def snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture
def zoo(tmp_path):
    z = Zoo.create(tmp_path / "zoo", PROBE, quality_weight=0.0)
    t0 = emb(999, "t0")
    for i in range(6):
        z.add(ZooEntry(f"m{i}", "mobilenet_v2", checkpoint=f"ckpt/m{i}.safetensors"), emb(i, f"source{i}"),
              t0 if i == 0 else None)
    return z


def test_round_trip_and_files(zoo):
    again = Zoo.load(zoo.path)
    assert again.ids == [f"m{i}" for i in range(6)]
    np.testing.assert_array_equal(again.source, zoo.source)
    np.testing.assert_array_equal(again.t0, emb(999).vector)
    assert again.entry("m3").source["name"] == "source3"
    files = sorted(p.name for p in zoo.path.iterdir())
    assert files[-1] == MANIFEST and len(files) == 2 and files[0].startswith("arrays-")
    manifest = json.loads((zoo.path / MANIFEST).read_text())
    assert manifest["probe"] == PROBE and manifest["dim"] == DIM and len(manifest["entries"]) == 6
    zoo.remove("m2")
    assert Zoo.load(zoo.path).ids == ["m0", "m1", "m3", "m4", "m5"]
    assert len(list(zoo.path.glob("arrays-*.npz"))) == 1  # the superseded arrays file is gone


def test_ranking_equals_brute_force_asymmetric(zoo):
    target = emb(42, "target")
    recs = zoo.rank(target, k=6)
    brute = np.array([asymmetric(zoo.source[i], target.vector, zoo.t0, zoo.alpha) for i in range(6)])
    assert [r.id for r in recs] == [f"m{i}" for i in np.argsort(brute, kind="stable")]
    np.testing.assert_allclose([r.score for r in recs], np.sort(brute), rtol=1e-10)
    assert all(r.bias == pytest.approx(0) and r.quality == 0 and r.distance == r.score for r in recs)
    assert recs[0].why().startswith("trained on source") and f"d_asym {recs[0].distance:.3f}" in recs[0].why()
    assert len(zoo.rank(target, k=2)) == 2 and len(zoo.rank(target, k=50)) == 6


def test_a_source_equal_to_the_target_ranks_first(zoo):
    recs = zoo.rank(emb(4, "same as m4"), k=1)
    assert recs[0].id == "m4"
    assert recs[0].distance == pytest.approx(-zoo.alpha * complexity(zoo.source[4], zoo.t0), abs=1e-12)


def test_quality_and_bias_move_the_ranking(tmp_path):
    z = Zoo.create(tmp_path / "z", PROBE, quality_weight=0.0)
    z.add(ZooEntry("weak", "resnet18", metadata={"imagenet_top1": 60.0}), emb(1, zeros=0), emb(999))
    z.add(ZooEntry("strong", "resnet50", metadata={"imagenet_top1": 80.0}), emb(2, zeros=0))
    target = emb(1, "like weak", zeros=0)
    assert z.rank(target)[0].id == "weak"
    assert z.rank(target, quality_weight=10.0)[0].id == "strong"
    # MODEL2VEC says "strong" behaves like the weak one's task: per-filter log-scales that take it there
    log_scales = np.zeros_like(z.source)
    log_scales[1] = np.log(z.source[0] / z.source[1])
    z.set_log_scales(log_scales, np.arange(DIM), {"note": "test"})
    again = Zoo.load(z.path)
    rec = {r.id: r for r in again.rank(target)}
    assert rec["strong"].distance == pytest.approx(rec["weak"].distance)
    assert rec["strong"].bias < 0 and rec["weak"].bias == 0.0
    assert "MODEL2VEC bias" in rec["strong"].why() and "bias" not in rec["weak"].why()
    assert again.manifest["model2vec"] == {"note": "test"}


def test_refusals_leave_the_zoo_unchanged(zoo):
    before = snapshot(zoo.path)
    cases = [
        (ZooError, lambda: zoo.add(ZooEntry("m1", "resnet18"), emb(7))),  # duplicate id
        (ZooError, lambda: zoo.add(ZooEntry("bad id!", "resnet18"), emb(7))),
        (ZooError, lambda: zoo.remove("nope")),
        (IncompatibleEmbeddingsError, lambda: zoo.add(ZooEntry("x", "resnet18"), emb(7, probe={**PROBE, "weights_hash": "zzz"}))),
        (IncompatibleEmbeddingsError, lambda: zoo.add(ZooEntry("x", "resnet18"), emb(7, probe={**PROBE, "name": "resnet34"}))),
        (IncompatibleEmbeddingsError, lambda: zoo.add(ZooEntry("x", "resnet18"), emb(7, method="variational"))),
        (IncompatibleEmbeddingsError, lambda: zoo.add(ZooEntry("x", "resnet18"), emb(7, dim=DIM + 1))),
        (IncompatibleEmbeddingsError, lambda: zoo.rank(emb(7, probe={**PROBE, "input_size": 224}))),
        (ZooError, lambda: zoo.rank(emb(7), k=0)),
        (ZooError, lambda: zoo.set_log_scales(np.zeros((2, 1)), np.zeros(DIM, int), {})),
        (ZooError, lambda: zoo.set_log_scales(np.full((6, 1), np.nan), np.zeros(DIM, int), {})),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
    assert snapshot(zoo.path) == before
    assert Zoo.load(zoo.path).ids == zoo.ids


def test_an_interrupted_change_leaves_the_zoo_as_it_was(zoo, monkeypatch):
    before = snapshot(zoo.path)
    real_replace = os.replace

    def fail_on_manifest(src, dst):
        if str(dst).endswith(MANIFEST):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_manifest)
    with pytest.raises(OSError):
        zoo.add(ZooEntry("new", "resnet18"), emb(11))
    with pytest.raises(OSError):
        zoo.remove("m0")
    monkeypatch.setattr(os, "replace", real_replace)
    assert zoo.ids == [f"m{i}" for i in range(6)]  # the object went back too
    assert Zoo.load(zoo.path).ids == zoo.ids
    zoo.add(ZooEntry("new", "resnet18"), emb(11))  # and the next change cleans the stray arrays file
    assert len(list(zoo.path.glob("arrays-*.npz"))) == 1 and len(snapshot(zoo.path)) == len(before)


def test_empty_missing_and_hand_edited_zoos(zoo, tmp_path):
    empty = Zoo.create(tmp_path / "empty", PROBE)
    with pytest.raises(ZooError, match="empty"):
        empty.rank(emb(1))
    assert len(Zoo.load(empty.path)) == 0
    with pytest.raises(ZooError, match="first entry"):
        empty.add(ZooEntry("a", "resnet18"), emb(1))  # no t0 yet
    with pytest.raises(ZooError, match="not a zoo"):
        Zoo.load(tmp_path / "nowhere")
    with pytest.raises(ZooError, match="already holds"):
        Zoo.create(zoo.path, PROBE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZooError, match="not a folder"):
        Zoo.create(tmp_path / "file", PROBE)

    mpath = zoo.path / MANIFEST
    good = mpath.read_text()
    m = json.loads(good)
    edits = {
        "not json": "{",
        "wrong format": json.dumps({**m, "format": "other"}),
        "renamed entry": json.dumps({**m, "entries": [{**m["entries"][0], "id": "renamed"}, *m["entries"][1:]]}),
        "duplicate id": json.dumps({**m, "entries": [m["entries"][0], *m["entries"]]}),
        "bad field": json.dumps({**m, "entries": [{**m["entries"][0], "colour": 1}, *m["entries"][1:]]}),
        "bad checksum": json.dumps({**m, "arrays": {**m["arrays"], "sha256": "0" * 64}}),
        "missing arrays": json.dumps({**m, "arrays": {**m["arrays"], "file": "arrays-missing.npz"}}),
        "entries not a list": json.dumps({**m, "entries": {}}),
    }
    for text in edits.values():
        mpath.write_text(text)
        with pytest.raises(ZooError):
            Zoo.load(zoo.path)
    mpath.write_text(good)
    arrays = zoo.path / m["arrays"]["file"]
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(ZooError, match="checksum"):
        Zoo.load(zoo.path)


def test_fit_model2vec_command(zoo, tmp_path, capsys):
    from task2vec.cli.main import main

    rows = ["task,model,error"]
    for t in range(5):
        emb(100 + t, f"task{t}").save(tmp_path / f"task{t}.npz")
        for i in range(6):
            rows.append(f"task{t}.npz,m{i},{0.1 + 0.05 * ((i + t) % 6):.2f}")
    (tmp_path / "records.csv").write_text("\n".join(rows) + "\n")
    assert main(["zoo", "fit-model2vec", str(zoo.path), "--records", str(tmp_path / "records.csv")]) == 0
    out = capsys.readouterr().out
    assert "leave-one-task-out over 5 tasks" in out and "model2vec" in out
    fitted = Zoo.load(zoo.path)
    assert fitted.manifest["model2vec"]["n_records"] == 30 and np.abs(fitted.bias).sum() > 0
    before = snapshot(zoo.path)
    (tmp_path / "bad.csv").write_text("task,model,error\ntask0.npz,unknown-model,0.1\n")
    assert main(["zoo", "fit-model2vec", str(zoo.path), "--records", str(tmp_path / "bad.csv")]) == 2
    assert "unknown-model" in capsys.readouterr().err and snapshot(zoo.path) == before


def test_resolve_model_from_names_zoo_entries_and_recommendations(zoo, tmp_path):
    from task2vec.errors import FinetuneError
    from task2vec.zoo.resolve import resolve_model

    assert resolve_model("resnet18").arch == "resnet18" and resolve_model("resnet18").weights is None
    with pytest.raises(FinetuneError, match="checkpoint .*m1.safetensors' does not exist"):
        resolve_model(f"{zoo.path}:m1")
    (zoo.path / "ckpt").mkdir()
    (zoo.path / "ckpt" / "m1.safetensors").write_bytes(b"x")
    choice = resolve_model(f"{zoo.path}:m1")
    assert (choice.arch, choice.model_id, choice.zoo) == ("mobilenet_v2", "m1", str(zoo.path))
    assert choice.weights == str(zoo.path / "ckpt" / "m1.safetensors")
    assert resolve_model("m1", zoo=zoo.path) == choice
    with pytest.raises(FinetuneError, match="has no entry 'm9'"):
        resolve_model("m9", zoo=zoo.path)
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"zoo": str(zoo.path), "recommendations": [{"id": "m1", "model": "mobilenet_v2"}]}))
    assert resolve_model(str(ranking)) == choice
    ranking.write_text(json.dumps({"zoo": "/nowhere", "recommendations": [{"id": "r", "model": "resnet18",
                                                                          "weights": "pretrained"}]}))
    assert resolve_model(str(ranking)).arch == "resnet18"  # the zoo moved: the architecture still serves
    ranking.write_text("{}")
    with pytest.raises(FinetuneError, match="is not a 'task2vec recommend --json' file"):
        resolve_model(str(ranking))
    with pytest.raises(FinetuneError, match="unknown model 'not-a-net'"):
        resolve_model("not-a-net")
    with pytest.raises(FinetuneError, match="weights file .* does not exist"):
        resolve_model("resnet18", weights=tmp_path / "none.pt")


def test_checkpoint_variables_resolve_against_the_working_directory(tmp_path, monkeypatch):
    z = Zoo.create(tmp_path / "zoo", PROBE, quality_weight=0.0)
    z.add(ZooEntry("g", "mobilenet_v2", checkpoint="${WEIGHTS_DIR}/w.safetensors"), emb(1), emb(999))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "w.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTS_DIR", "w")  # relative to where the user runs the command, not to the zoo
    assert z.weights(z.entry("g")) == (str(tmp_path / "w" / "w.safetensors"), "local")
    assert Zoo.load(tmp_path / "zoo").entry("g").checkpoint == "${WEIGHTS_DIR}/w.safetensors"  # kept as written
    monkeypatch.setenv("WEIGHTS_DIR", "nowhere")
    assert z.weights(z.entry("g")) == (str(tmp_path / "nowhere" / "w.safetensors"), "missing")
    monkeypatch.delenv("WEIGHTS_DIR")
    with pytest.raises(ZooError, match=r"zoo\.json'?, entry 'g': environment variable WEIGHTS_DIR is not set"):
        z.weights(z.entry("g"))


def test_paths_resolve_and_record_by_one_rule(tmp_path, monkeypatch):
    from task2vec.paths import portable_path, resolve_path

    monkeypatch.chdir(tmp_path)
    for d in ("shared/data/d", "zoo/local", "other"):
        (tmp_path / d).mkdir(parents=True)
    monkeypatch.setenv("DATA_DIR", "other")  # relative: where the user stands
    assert resolve_path("${DATA_DIR}/x", "zoo", "f") == str(tmp_path / "other" / "x")
    assert resolve_path("experts/${DATA_DIR}.pt", "zoo", "f") == str(Path("zoo") / "experts" / "other.pt")
    assert resolve_path("experts/a.pt", "zoo", "f") == str(Path("zoo") / "experts" / "a.pt")  # the file's folder
    assert resolve_path("/abs/a.pt", "zoo", "f") == "/abs/a.pt"
    assert resolve_path("https://host/${NOT_SET_ANYWHERE}/a.pt", "zoo", "f") == "https://host/${NOT_SET_ANYWHERE}/a.pt"
    with pytest.raises(ZooError, match=r"^spec\.yaml, entry 2: environment variable NOT_SET_ANYWHERE is not set"):
        resolve_path("${NOT_SET_ANYWHERE}/a.pt", "zoo", "spec.yaml, entry 2")

    monkeypatch.setenv("TASK2VEC_SHARED", "shared")
    assert portable_path(tmp_path / "shared" / "data" / "d", "zoo") == "${TASK2VEC_SHARED}/data/d"
    assert portable_path("shared/data/d", "zoo") == "${TASK2VEC_SHARED}/data/d"
    assert portable_path(tmp_path / "zoo" / "local", "zoo") == "local"
    assert portable_path("other", "zoo") == "../other"  # relative stays relative, read back against the zoo
    assert Path(resolve_path(portable_path("other", "zoo"), "zoo", "f")).resolve() == tmp_path / "other"
    assert portable_path("/somewhere/else", "zoo") == "/somewhere/else"  # the user's own absolute path
    assert portable_path("hf://org/model", "zoo") == "hf://org/model"
    monkeypatch.delenv("TASK2VEC_SHARED")
    assert portable_path("shared/data/d", "zoo") == "../shared/data/d"


@pytest.mark.parametrize("name", ["demo", "starter"])
def test_committed_specs_resolve_from_any_working_directory(name, tmp_path, shared, monkeypatch):
    """The README's `export TASK2VEC_SHARED=../shared`: a relative value, resolved where the user stands."""
    from task2vec.zoo.spec import read_spec, trained_by_spec

    spec_path = ROOT / "zoo" / name / "spec.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASK2VEC_SHARED", os.path.relpath(shared, tmp_path))
    spec = read_spec(spec_path)
    weights = shared / "weights" / "mobilenet_v2_imagenet.safetensors"
    assert Path(spec["weights"]).is_file() and Path(spec["weights"]).resolve() == weights.resolve()
    assert Path(spec["finetune"]["from"]).resolve() == weights.resolve()
    assert Path(spec["zoo"]).resolve() == spec_path.parent.resolve()
    assert all(Path(e["source_dataset"]).exists() for e in spec["entries"])
    first, second = spec["entries"][:2]
    assert Path(first["checkpoint_path"]).resolve() == weights.resolve()
    assert Path(second["checkpoint_path"]).resolve() == spec_path.parent.resolve() / second["checkpoint"]
    assert [trained_by_spec(spec, e) for e in spec["entries"]] == [False] + [True] * (len(spec["entries"]) - 1)
    monkeypatch.delenv("TASK2VEC_SHARED")
    with pytest.raises(ZooError) as info:
        read_spec(spec_path)
    assert "environment variable TASK2VEC_SHARED is not set" in str(info.value)
    assert str(spec_path) in str(info.value) and "\n" not in str(info.value)


def test_params_m_and_input_size_are_derived_not_typed(tmp_path):
    from task2vec.zoo.spec import entry_metadata, read_spec

    assert entry_metadata("mobilenet_v2", {"license": "x"}, 112, pretrained=False) == \
        {"license": "x", "params_m": 3.5, "input_size": 112}
    assert entry_metadata("resnet18", None, pretrained=True) == {
        "imagenet_top1": 69.758, "imagenet_top1_source": "torchvision's published figure for resnet18", "params_m": 11.69,
        "input_size": 224}
    lite = entry_metadata("tf_efficientnet_lite1", None, pretrained=True)  # timm's default tag's row of the table
    assert lite["imagenet_top1"] == 76.674 and lite["imagenet_top1_source"].endswith("tf_efficientnet_lite1.in1k at 240 px")
    assert entry_metadata("mobilenet_v2", None, pretrained=True, published="quantized_mobilenet_v2")["imagenet_top1"] \
        == 71.658
    assert entry_metadata("tf_efficientnet_lite2", None, pretrained=False) == {"params_m": 6.09, "input_size": 260}
    with pytest.raises(ZooError, match="unknown model 'not-a-net'"):
        entry_metadata("not-a-net", None, pretrained=False)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("zoo: z\nprobe: mobilenet_v2\nentries:\n  - id: a\n    model: mobilenet_v2\n"
                         "    pretrained: true\n    source_dataset: d\n    metadata: {params_m: 2.2}\n")
    with pytest.raises(ZooError, match=r"entry 1 \(a\): metadata 'params_m' is derived"):
        read_spec(spec_path)


def test_spec_classes_and_half_select_the_source_task(tmp_path, shared, monkeypatch):
    from task2vec.zoo.spec import entry_task, read_spec

    monkeypatch.setenv("TASK2VEC_SHARED", str(shared))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("zoo: z\nprobe: mobilenet_v2\nsplit_seed: 3\nentries:\n"
                         "  - id: a\n    model: mobilenet_v2\n    pretrained: true\n    half: source\n"
                         "    classes: ['4', '9']\n    source_dataset: ${TASK2VEC_SHARED}/data/mnist_test\n")
    spec = read_spec(spec_path)
    task = entry_task(spec, spec["entries"][0])
    assert task.classes == ["4", "9"] and 700 < len(task) < 1300  # about half of 1,991 images
    spec["entries"][0]["half"] = "target"
    other = entry_task(spec, spec["entries"][0])
    assert set(task.paths).isdisjoint(other.paths)
    spec_path.write_text(spec_path.read_text().replace("half: source", "half: test"))
    with pytest.raises(ZooError, match="'half' must be source or target"):
        read_spec(spec_path)


def test_model2vec_log_scales_are_stored_compactly_and_give_the_exact_biases(zoo, tmp_path):
    from task2vec.zoo.model2vec import Model2Vec

    rng = np.random.default_rng(0)
    tasks = np.stack([emb(100 + k).vector for k in range(5)])
    records = (np.repeat(np.arange(5), 6), np.tile(np.arange(6), 5), rng.random(30) * 0.5)
    fitted = Model2Vec(max_iter=20).fit(zoo.source, tasks, records, zoo.t0, [DIM // 2, DIM - DIM // 2])
    full_size = (zoo.path / json.loads((zoo.path / MANIFEST).read_text())["arrays"]["file"]).stat().st_size
    zoo.set_log_scales(fitted.log_scales_, fitted.group_, {"note": "scales"})
    np.testing.assert_array_equal(zoo.bias, fitted.biases_)
    again = Zoo.load(zoo.path)
    np.testing.assert_array_equal(again.bias, fitted.biases_)
    np.testing.assert_array_equal(again.model_embeddings(), fitted.model_embeddings_)
    arrays = zoo.path / json.loads((zoo.path / MANIFEST).read_text())["arrays"]["file"]
    with np.load(arrays) as z:
        assert "bias" not in z.files and z["log_scales"].shape == (6, 2)
    assert arrays.stat().st_size < full_size * 1.1  # D-sized biases are not stored
    again.remove("m2")  # the scales follow the entries
    np.testing.assert_array_equal(Zoo.load(zoo.path).bias, np.delete(fitted.biases_, 2, axis=0))
    again.add(ZooEntry("new", "resnet18"), emb(77))
    reloaded = Zoo.load(zoo.path)
    assert reloaded.ids[-1] == "new" and not reloaded.bias[-1].any()
    with pytest.raises(ZooError, match="log-scales must be"):
        reloaded.set_log_scales(np.zeros((2, 2)), fitted.group_, {})


def test_set_trivial_replaces_t0_and_drops_the_biases_learned_against_the_old_one(zoo, tmp_path):
    from task2vec.zoo.model2vec import Model2Vec

    tasks = np.stack([emb(100 + k).vector for k in range(3)])
    records = (np.repeat(np.arange(3), 6), np.tile(np.arange(6), 3), np.random.default_rng(0).random(18))
    fitted = Model2Vec(max_iter=5).fit(zoo.source, tasks, records, zoo.t0)
    zoo.set_log_scales(fitted.log_scales_, fitted.group_, {"note": "old t0"})
    new_t0 = emb(555, "t0")
    zoo.set_trivial(new_t0)
    again = Zoo.load(zoo.path)
    np.testing.assert_array_equal(again.t0, new_t0.vector)
    assert not again.bias.any() and again.scales is None and "model2vec" not in again.manifest
    target = emb(42, "target")
    brute = np.array([asymmetric(again.source[i], target.vector, new_t0.vector, again.alpha) for i in range(6)])
    assert [r.id for r in again.rank(target, k=6)] == [f"m{i}" for i in np.argsort(brute, kind="stable")]
    with pytest.raises(IncompatibleEmbeddingsError):
        zoo.set_trivial(emb(1, probe={**PROBE, "input_size": 224}))
    with pytest.raises(ZooError, match="empty"):
        Zoo.create(tmp_path / "empty", PROBE).set_trivial(new_t0)


def test_a_zoo_holds_fisher_embeddings_only(tmp_path):
    with pytest.raises(ZooError, match="Fisher embeddings"):
        Zoo.create(tmp_path / "v", PROBE, method="variational")
    assert not (tmp_path / "v").exists()


def test_configure_changes_alpha_and_quality_weight_and_drops_biases_learned_at_the_old_alpha(tmp_path):
    z = Zoo.create(tmp_path / "z", PROBE)
    z.add(ZooEntry("a", "resnet18"), emb(1), emb(999))
    z.add(ZooEntry("b", "resnet50"), emb(2))
    z.set_log_scales(np.log([[1.0], [1.5]]), np.zeros(DIM, int), {"alpha": z.alpha})  # b = 0.5 F for "b"
    z.configure(quality_weight=0.2)  # the biases do not depend on the quality weight: they stay
    again = Zoo.load(z.path)
    assert again.quality_weight == 0.2 and again.manifest["model2vec"] and again.bias.any()
    again.configure(alpha=0.5)
    again = Zoo.load(z.path)
    assert again.alpha == 0.5 and not again.manifest["model2vec"] and not again.bias.any()
    target = emb(3)
    brute = [asymmetric(again.source[i], target.vector, again.t0, 0.5) for i in range(2)]
    assert [r.distance for r in again.rank(target)] == pytest.approx(sorted(brute))
    for bad in ({"alpha": -1.0}, {"alpha": float("nan")}, {"quality_weight": float("inf")}, {"alpha": "0.1"}):
        with pytest.raises(ZooError):
            again.configure(**bad)
    assert Zoo.load(z.path).alpha == 0.5


# ----------------------------------------------------------------------------- the manifest's own checksum
HAND_EDITS = {
    "alpha 5.0": lambda m: {**m, "alpha": 5.0},
    "checkpoint outside the zoo": lambda m: {**m, "entries": [{**m["entries"][0], "checkpoint": "/etc/passwd"},
                                                              *m["entries"][1:]]},
    "top-1 99.9": lambda m: {**m, "entries": [{**m["entries"][0], "metadata": {"imagenet_top1": 99.9}},
                                              *m["entries"][1:]]},
}


@pytest.mark.parametrize("edit", HAND_EDITS.values(), ids=HAND_EDITS.keys())
def test_a_hand_edited_manifest_is_refused_by_its_checksum(zoo, edit):
    mpath = zoo.path / MANIFEST
    mpath.write_text(json.dumps(edit(json.loads(mpath.read_text())), indent=1))
    with pytest.raises(ZooError) as info:
        Zoo.load(zoo.path)
    assert str(info.value) == (f"zoo manifest {str(mpath)!r} was edited by hand (its checksum does not match): "
                               f"run 'task2vec zoo verify {zoo.path}' to see what is wrong")
    report = Zoo.verify(zoo.path)
    assert not report.ok and any("edited by hand" in p for p in report.problems)


def test_the_checksum_covers_the_canonical_json_without_itself(zoo):
    from task2vec.zoo.zoo import manifest_checksum

    mpath = zoo.path / MANIFEST
    m = json.loads(mpath.read_text())
    assert list(m)[:2] == ["format", "manifest_sha256"]  # next to the format: a one-line diff for older manifests
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert m["manifest_sha256"] == manifest_checksum(m) == __import__("hashlib").sha256(canonical).hexdigest()
    mpath.write_text(json.dumps(m, indent=4, sort_keys=True))  # the layout is not the content
    assert Zoo.load(zoo.path).ids == zoo.ids


BAD_FIELDS = [  # (what a manifest without a checksum says, the refusal)
    (lambda m: {**m, "alpha": float("nan")}, "field 'alpha' must be a finite number, got nan"),
    (lambda m: {**m, "alpha": -1.0}, "field 'alpha' must be a number >= 0, got -1.0"),
    (lambda m: {**m, "quality_weight": float("inf")}, "field 'quality_weight' must be a finite number, got inf"),
    (lambda m: {**m, "probe": {**m["probe"], "input_size": 0}}, "field 'probe.input_size' must be an integer >= 1"),
    (lambda m: {**m, "probe": {**m["probe"], "weights_hash": 7}}, "field 'probe.weights_hash' must be a non-empty"),
    (lambda m: {**m, "method": "variational"}, "field 'method' must be one of"),
    (lambda m: {**m, "dim": "40"}, "field 'dim' must be an integer, got '40'"),
    (lambda m: {**m, "colour": "red"}, "unknown field(s) ['colour']"),
    (lambda m: {**m, "arrays": {**m["arrays"], "file": "../../etc/arrays.npz"}}, "field 'arrays' must name"),
    (lambda m: one(m, checkpoint="/etc/passwd"), "entry 'm0': checkpoint '/etc/passwd' is an absolute path"),
    (lambda m: one(m, checkpoint="ckpt/../../../etc/passwd"), "checkpoint 'ckpt/../../../etc/passwd' leaves the zoo"),
    (lambda m: one(m, checkpoint="${HOME}/../x.pt"), "leaves the zoo folder"),
    (lambda m: one(m, checkpoint=""), "entry 'm0': 'checkpoint' must be null or a path"),
    (lambda m: one(m, pretrained=True), "entry 'm0': give 'pretrained' or 'checkpoint', not both"),
    (lambda m: one(m, id="bad id!"), "entry 1: 'id' must be letters, digits and ._+- only"),
    (lambda m: one(m, metadata={"imagenet_top1": 150}), "metadata 'imagenet_top1' (a percentage) must be a number in [0, 100]"),
    (lambda m: one(m, metadata={"imagenet_top1": "high"}),
     "metadata 'imagenet_top1' (a percentage) must be a number, got 'high'"),
    (lambda m: one(m, metadata={"input_size": -5}), "entry 'm0': metadata 'input_size' must be an integer >= 1, got -5"),
    (lambda m: one(m, metadata={"params_m": 0}), "entry 'm0': metadata 'params_m' must be a positive number"),
    (lambda m: one(m, metadata={"license": 3}), "entry 'm0': metadata 'license' must be a string"),
    (lambda m: one(m, source={"n_images": 2.5}), "entry 'm0': source 'n_images' must be an integer, got 2.5"),
    (lambda m: one(m, source={"name": ["x"]}), "entry 'm0': source 'name' must be a string"),
]


def one(m, **fields):
    """The manifest with its first entry's fields changed."""
    return {**m, "entries": [{**m["entries"][0], **fields}, *m["entries"][1:]]}


@pytest.mark.parametrize("edit, message", BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_every_field_is_checked_also_in_a_manifest_without_a_checksum(zoo, edit, message):
    """Manifests written before the checksum still load, and what they hold is checked all the same."""
    mpath = zoo.path / MANIFEST
    m = {k: v for k, v in json.loads(mpath.read_text()).items() if k != "manifest_sha256"}
    mpath.write_text(json.dumps(m, indent=1))
    assert Zoo.load(zoo.path).ids == zoo.ids
    assert any("carries no checksum" in n for n in Zoo.verify(zoo.path).notes)
    mpath.write_text(json.dumps(edit(m), indent=1))
    with pytest.raises(ZooError) as info:
        Zoo.load(zoo.path)
    assert message in str(info.value) and str(mpath) in str(info.value) and "\n" not in str(info.value)
    assert any(message in p for p in Zoo.verify(zoo.path).problems)


def test_verify_reports_every_problem_and_notes_missing_weights(zoo):
    report = Zoo.verify(zoo.path)
    assert report.ok and report.entries == 6 and report.problems == []
    assert len(report.notes) == 6 and all("is not here" in n for n in report.notes)  # ckpt/m*.safetensors: not built
    (zoo.path / "ckpt").mkdir()
    for i in range(6):
        (zoo.path / "ckpt" / f"m{i}.safetensors").write_bytes(b"x")
    assert Zoo.verify(zoo.path).notes == []

    mpath = zoo.path / MANIFEST
    m = json.loads(mpath.read_text())
    m = one({**m, "alpha": -1.0}, metadata={"input_size": 0})
    mpath.write_text(json.dumps(m))
    problems = Zoo.verify(zoo.path).problems
    assert len(problems) == 3 and "edited by hand" in problems[0]
    assert "field 'alpha'" in problems[1] and "metadata 'input_size'" in problems[2]
    with pytest.raises(ZooError, match="edited by hand"):
        Zoo.load(zoo.path)

    arrays = zoo.path / m["arrays"]["file"]
    arrays.write_bytes(arrays.read_bytes()[:-10])
    m = {k: v for k, v in json.loads(mpath.read_text()).items() if k != "manifest_sha256"}
    mpath.write_text(json.dumps({**m, "alpha": 0.15, "entries": [{**e, "metadata": {}} for e in m["entries"]]}))
    assert Zoo.verify(zoo.path).problems == [f"zoo arrays file {str(arrays)!r} does not match the manifest's "
                                             "checksum (edited or corrupt)"]
    assert Zoo.verify(zoo.path / "nowhere").problems[0].endswith("is not a zoo (no zoo.json; create one with "
                                                                 "'task2vec zoo init')")


def test_what_a_zoo_writes_it_can_read_back(zoo, tmp_path):
    """A change never writes what load would refuse: an entry is checked before it is added."""
    before = snapshot(zoo.path)
    for entry, message in ((ZooEntry("x", "resnet18", checkpoint="/etc/passwd"), "is an absolute path"),
                           (ZooEntry("x", "resnet18", checkpoint="../w.pt"), "leaves the zoo folder"),
                           (ZooEntry("x", "resnet18", metadata={"imagenet_top1": 101}), "in [0, 100]"),
                           (ZooEntry("x", "resnet18", True, "w.pt"), "not both")):
        with pytest.raises(ZooError, match=re.escape(message)):
            zoo.add(entry, emb(7))
    assert snapshot(zoo.path) == before
    zoo.add(ZooEntry("y", "resnet18", checkpoint="https://host/w.pt"), emb(7))
    assert Zoo.load(zoo.path).weights(zoo.entry("y")).status == "downloadable"


def test_configure_rewrites_the_manifest_only(zoo):
    def arrays():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in zoo.path.glob("arrays-*.npz")}

    before = arrays()
    zoo.configure(alpha=0.3, quality_weight=0.2)
    assert arrays() == before  # the same file, not rewritten
    again = Zoo.load(zoo.path)
    assert (again.alpha, again.quality_weight) == (0.3, 0.2)


def test_configure_sets_both_when_it_drops_the_biases(zoo):
    zoo.set_log_scales(np.full((len(zoo), 1), 0.5), np.zeros(zoo.source.shape[1], dtype=int), {"alpha": zoo.alpha})
    assert Zoo.load(zoo.path).manifest["model2vec"]
    zoo.configure(alpha=0.3, quality_weight=0.2)
    again = Zoo.load(zoo.path)
    assert (again.alpha, again.quality_weight, again.manifest["model2vec"]) == (0.3, 0.2, None)


@pytest.mark.parametrize("name", ["demo", "starter"])
def test_committed_zoos_load_and_verify(name, shared):
    path = ROOT / "zoo" / name
    assert len(Zoo.load(path)) > 0
    report = Zoo.verify(path)
    assert report.ok, report.problems
    assert not any("checksum" in n for n in report.notes)  # the committed manifests carry theirs
