"""Transfer records CSVs: reading good files, one-line errors for bad ones, and feeding the MODEL2VEC fit."""

import numpy as np
import pytest

from task2vec import Embedding, RecordsError
from task2vec.zoo.model2vec import Model2Vec
from task2vec.zoo.records import read_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def emb(vec, probe="p", method="exact"):
    meta = {"probe": {"name": probe, "weights_hash": "h", "input_size": 224}, "method": {"name": method},
            "layers": [{"name": "a", "filters": 2}, {"name": "b", "filters": len(vec) - 2}]}
    return Embedding(np.asarray(vec, float), meta)


@pytest.fixture
def folder(tmp_path):
    emb([1.0, 2.0, 3.0, 4.0]).save(tmp_path / "t1.npz")
    (tmp_path / "sub").mkdir()
    emb([4.0, 3.0, 2.0, 1.0]).save(tmp_path / "sub" / "t2.npz")
    emb([1.0, 2.0, 3.0, 4.0], probe="other").save(tmp_path / "alien.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    return tmp_path


def write(folder, text, name="rec.csv"):
    (folder / name).write_text(text)
    return folder / name


def test_read_records_good_csv(folder):
    path = write(folder, "Task,model,accuracy\n"
                         "t1.npz,resnet,80\n"
                         "sub/t2.npz,vit,72.5\n"
                         "./t1.npz,vit,90\n"
                         "\n"
                         "named,resnet,50\n")
    rec = read_records(path, model_ids=["vit", "mlp", "resnet"], tasks={"named": emb([1.0, 1.0, 1.0, 1.0])})
    assert rec.tasks == ["t1.npz", "sub/t2.npz", "named"] and rec.models == ["vit", "mlp", "resnet"]
    np.testing.assert_array_equal(rec.task_idx, [0, 1, 0, 2])  # ./t1.npz is the same file as t1.npz
    np.testing.assert_array_equal(rec.model_idx, [2, 0, 0, 2])
    np.testing.assert_allclose(rec.error, [0.2, 0.275, 0.1, 0.5])  # percent accuracy -> error
    assert rec.task_vectors.shape == (3, 4) and rec.layer_sizes == [2, 2] and len(rec) == 4
    fractions = read_records(write(folder, "task,model,error\nt1.npz,a,0.3\nsub/t2.npz,b,1\n"), scale="auto")
    assert fractions.models == ["a", "b"] and list(fractions.error) == [0.3, 1.0]
    # records feed the fit directly
    F = np.array([[1.0, 2.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0], [5.0, 3.0, 2.0, 1.0]])
    fit = Model2Vec(l2=0.1).fit(F, rec.task_vectors, rec, np.ones(4), rec.layer_sizes)
    assert fit.n_records_.tolist() == [1, 0, 1] and np.all(fit.biases_[1] == 0)


@pytest.mark.parametrize("text, match", [
    (None, "does not exist"),
    ("", "is empty"),
    ("task,model,error\n", "no records below the header"),
    ("task,error\nt1.npz,0.1\n", "missing column.*model"),
    ("task,model\nt1.npz,a\n", "exactly one of error/accuracy"),
    ("task,model,error,accuracy\nt1.npz,a,0.1,0.9\n", "exactly one of error/accuracy"),
    ("task,model,error\nt1.npz,a,0.1,extra\n", "line 2: 4 fields"),
    ("task,model,error\nt1.npz,a,zero\n", "line 2: error 'zero' is not a number"),
    ("task,model,error\nt1.npz,a,nan\n", "line 2: error 'nan' is not a non-negative finite"),
    ("task,model,error\nt1.npz,a,-0.1\n", "line 2: error '-0.1' is not a non-negative"),
    ("task,model,accuracy\nt1.npz,a,50\nsub/t2.npz,a,101\n", "line 3: accuracy '101' is out of range for a percentage"),
    ("task,model,error\nt1.npz,a,0.1\nsub/t2.npz,a,1.5\n", None),  # auto: percent, fine
    ("task,model,error\nt1.npz,a,0.1\nt1.npz,b,0.2\n./t1.npz,a,0.3\n",
     "lines 2 and 4: duplicate record for task './t1.npz' on model 'a'"),
    ("task,model,error\nt1.npz,nope,0.1\n", "line 2: unknown model id 'nope'"),
    ("task,model,error\nmissing.npz,a,0.1\n", "line 2: task 'missing.npz' is neither an embedding file"),
    ("task,model,error\njunk.npz,a,0.1\n", "line 2: task 'junk.npz': .*not a readable task2vec embedding"),
    ("task,model,error\nt1.npz,a,0.1\nalien.npz,a,0.2\n", "not comparable.*probe differs"),
    ("task,model,error\nt1.npz,,0.1\n", "line 2: empty model"),
])
def test_read_records_bad_csv(folder, text, match):
    path = folder / "absent.csv" if text is None else write(folder, text)
    if match is None:
        assert read_records(path, model_ids=["a", "b"]).error.tolist() == [0.001, 0.015]
        return
    with pytest.raises(RecordsError, match=match) as info:
        read_records(path, model_ids=["a", "b"])
    assert "\n" not in str(info.value)


def test_read_records_fraction_scale_and_reference_embedding(folder):
    path = write(folder, "task,model,error\nt1.npz,a,0.1\nsub/t2.npz,b,20\n")
    with pytest.raises(RecordsError, match="line 3: error '20' is out of range for a fraction"):
        read_records(path, scale="fraction")
    with pytest.raises(RecordsError, match="not comparable"):
        read_records(path, like=emb([1.0, 2.0, 3.0], probe="p"))
    with pytest.raises(RecordsError, match="model_ids lists 'a' twice"):
        read_records(path, model_ids=["a", "a"])
