"""Shared fixtures: the real material in ../shared (override with TASK2VEC_SHARED)."""

import os
import sys
import warnings
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("TASK2VEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.safetensors"


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """A per-user cache of the test session's own: no test writes to ~/.cache/task2vec."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("user-cache")
        mp.setenv("TASK2VEC_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run as fast on one thread, and do not collapse when other processes load the CPUs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not WEIGHTS.is_file():
        pytest.fail(f"real test material not found at {SHARED} (set TASK2VEC_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def probe112(shared):
    """The real ImageNet MobileNetV2 probe at 112 px: the real pipeline at CPU-test cost."""
    from task2vec import Probe

    return Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=112, device="cpu")


@pytest.fixture
def cli_warnings(monkeypatch):
    """Show warnings on stderr as they are outside pytest (pytest records them instead), and undo
    the global ``warnings.formatwarning`` that ``main`` installs."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)


@pytest.fixture(scope="session")
def real_embedding_files(probe112, shared, tmp_path_factory) -> list[Path]:
    """Embedding files of three tiny real tasks (16 images each, the real probe at 112 px): ants vs
    bees, five flowers, pneumonia X-rays; material for the commands that read embeddings."""
    from task2vec import Task2Vec

    out = tmp_path_factory.mktemp("real_embeddings")
    return [Task2Vec(probe112, max_samples=16, progress=False).embed(shared / "data" / name).save(out / f"{name}.t2v.npz")
            for name in ("hymenoptera", "flowers5", "pneumoniamnist")]


@pytest.fixture(scope="session")
def oversized_images(tmp_path_factory) -> dict[str, Path]:
    """Small files that decode to too many pixels: ``wide`` (60000 x 1, 138 bytes: a shorter-side resize to
    256 px would make 11.8 GB), ``bomb`` (30000 x 30000 1-bit, 110 kB: PIL's DecompressionBombError) and
    ``big`` (10000 x 9000, over PIL's 89,478,485-pixel limit, under which PIL only warns)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("oversized")
    sizes = {"wide": ("L", (60000, 1)), "bomb": ("1", (30000, 30000)), "big": ("1", (10000, 9000))}
    for name, (mode, size) in sizes.items():
        Image.new(mode, size).save(root / f"{name}.png")
    return {name: root / f"{name}.png" for name in sizes}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on a machine without CUDA (benchmarks/gpu_check.sh runs them on a GPU)."""
    if not any("cuda" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
