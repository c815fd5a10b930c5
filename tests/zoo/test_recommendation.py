"""task2vec.recommend: one call from a dataset to a checked, trust-marked ranking (real probe, real data)."""

import json
import shutil

import pytest
from safetensors.torch import save_file

import task2vec
from task2vec import Embedding, Zoo, ZooError, recommend, symmetric
from task2vec.cli.main import main
from task2vec.defaults import RECOMMEND_CHECK, RECOMMEND_FISHER_IMAGES, RECOMMEND_MAX_RANK
from task2vec.backbones.probe import build_network

from conftest import WEIGHTS

FAST = ["--max-samples", "24", "--quiet", "--weights", str(WEIGHTS)]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, shared):
    """Three entries: the ImageNet probe (source: X-rays), a random-init MobileNetV2 whose source is the
    target set itself (Task2Vec ranks it first) and one whose checkpoint is gone."""
    z = tmp_path_factory.mktemp("recommend") / "zoo"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    experts = z / "experts"  # a zoo's checkpoints lie inside it
    experts.mkdir()
    save_file({k: v.contiguous() for k, v in build_network("mobilenet_v2", random_init=True, seed=3)
               .body.state_dict().items()}, str(experts / "random.safetensors"))
    shutil.copy(experts / "random.safetensors", experts / "gone.safetensors")
    (experts / "imagenet.safetensors").symlink_to(WEIGHTS)
    for entry, source in (("random", "hymenoptera"), ("imagenet", "pneumoniamnist"), ("gone", "flowers5")):
        assert main(["zoo", "add", str(z), "--id", entry, "--model", "mobilenet_v2", "--checkpoint",
                     f"experts/{entry}.safetensors", "--source-dataset", str(shared / "data" / source), *FAST]) == 0
    (experts / "gone.safetensors").unlink()
    return z


def test_one_call_embeds_ranks_checks_and_marks_trust(zoo_dir, shared, tmp_path):
    assert task2vec.recommend is recommend and task2vec.Zoo is Zoo
    hym = shared / "data" / "hymenoptera"
    rec = recommend(hym, zoo_dir, k=3, weights=WEIGHTS, max_samples=24)
    assert isinstance(rec, task2vec.Recommendation) and rec.n_images == 24 and rec.noise > 0
    # the defaults apply: the first picks (random first) checked together with the probe's entry ('gone', when
    # among them, is skipped), the target's Fisher at the defaults' rank and image cap (the head sees all 24)
    assert rec.settings["check"] == RECOMMEND_CHECK and rec.settings["embedding"]["max_rank"] == RECOMMEND_MAX_RANK
    assert rec.settings["embedding"].get("fisher_images") == RECOMMEND_FISHER_IMAGES
    assert sorted(rec.checked) == ["imagenet", "random"] and set(rec.skipped) <= {"gone"}
    assert [c.id for c in rec.candidates][:2] == ["imagenet", "random"]  # the check put the ImageNet features first
    assert [c.rank for c in rec.candidates] == [1, 2, 3]
    assert rec.best.evidence > rec.candidates[1].evidence and rec.candidates[2].evidence is None
    assert {c.id: c.weights.status for c in rec.candidates} == {"imagenet": "local", "random": "local",
                                                                 "gone": "missing"}
    # trust: with k = every entry each pick stays in the top k; ties are the scores within the noise of the best
    assert all(c.stable is True for c in rec.candidates)
    best = min(c.score for c in rec.candidates)
    near = [c.id for c in rec.candidates if c.score - best <= rec.noise]
    assert [c.id for c in rec.candidates if c.tied] == (near if len(near) > 1 else [])

    doc = json.loads(rec.save(tmp_path / "r.json").read_text())
    assert doc["schema_version"] == 1 and doc["noise_half_split"] == rec.noise and doc["probe"]["input_size"] == 112
    assert [r["weights_available"] for r in doc["recommendations"]] == [True, True, False]
    assert doc["recommendations"][2]["weights"].endswith("gone.safetensors")  # the path alone, no status inside
    zeros = json.loads((tmp_path / "r.json").read_text(), parse_float=lambda x: x)  # floats as written
    assert not any(v in ("-0.0", "-0") for r in zeros["recommendations"] for v in r.values())
    assert all(r["bias"] == 0.0 for r in doc["recommendations"])  # no MODEL2VEC biases in this zoo


def test_stability_follows_the_half_split_embeddings(zoo_dir, shared, tmp_path):
    hym = shared / "data" / "hymenoptera"
    rec = recommend(hym, zoo_dir, k=1, check=0, weights=WEIGHTS, max_samples=24)
    assert rec.checked == [] and len(rec.candidates) == 1
    # the embedding file keeps its halves; the pick is stable when it is also first under each of them
    assert main(["embed", str(hym), "-o", str(tmp_path / "h.npz"), "--image-size", "112", "--max-rank", "1",
                 *FAST]) == 0
    emb = Embedding.load(tmp_path / "h.npz")
    assert emb.halves.shape == (2, len(emb.vector))
    zoo = Zoo.load(zoo_dir)
    firsts = {zoo.rank(emb.half(h), 1)[0].id for h in (0, 1)}
    again = recommend(emb, zoo, k=1, check=0)
    assert again.best.id == rec.best.id and again.best.stable == (firsts == {again.best.id})
    assert symmetric(*emb.halves) == pytest.approx(emb.meta["noise_half_split"], rel=1e-9)
    # the target's Fisher over 8 of its 24 images: the head still sees all 24
    few = recommend(hym, zoo_dir, k=1, check=0, weights=WEIGHTS, max_samples=24, fisher_images=8)
    assert few.n_images == 24 and few.settings["embedding"]["fisher_images"] == 8


def test_a_pick_without_local_weights_is_skipped_with_one_warning(zoo_dir, shared):
    zoo = Zoo.load(zoo_dir)
    flowers = shared / "data" / "flowers5"  # the missing entry's own source: Task2Vec ranks it first
    with pytest.warns(UserWarning, match="'gone' skipped, its weights are missing") as record:
        rec = recommend(flowers, zoo, k=3, weights=WEIGHTS, max_samples=24)
    assert len(record) == 1 and rec.skipped == ["gone"] and "gone" not in rec.checked
    assert rec.best.id in ("imagenet", "random") and rec.best.evidence is not None


def test_an_embedding_is_ranked_unchecked_and_bad_values_are_refused(zoo_dir, shared, tmp_path):
    assert main(["embed", str(shared / "data" / "hymenoptera"), "-o", str(tmp_path / "x.npz"), "--image-size", "112",
                 *FAST]) == 0
    with pytest.warns(UserWarning, match="needs the dataset's images"):
        rec = recommend(tmp_path / "x.npz", zoo_dir, k=2)
    assert rec.checked == [] and rec.settings["check"] == 0 and len(rec.candidates) == 2
    for kw in ({"k": 0}, {"k": 1.5}, {"check": -1}, {"check": True}):
        with pytest.raises(ZooError):
            recommend(tmp_path / "x.npz", zoo_dir, **kw)
    with pytest.raises(ZooError, match="not a zoo"):
        recommend(tmp_path / "x.npz", tmp_path)
