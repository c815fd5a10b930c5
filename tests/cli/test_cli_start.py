"""The command line starts light: ``--help``, ``distance`` and ``map`` import no torch, the package
root imports its public names on first use, and drawing a task map leaves matplotlib's backend alone."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import task2vec

HEAVY = ("torch", "torchvision", "timm")
PLOTTING = ("numba", "matplotlib", "umap", "sklearn")
ROOT = Path(task2vec.__file__).resolve().parents[1]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout of task2vec."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_cli(argv: list[str], forbidden: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    """``main(argv)`` in a fresh interpreter, which then fails if it imported any of ``forbidden``."""
    code = "\n".join([
        "import sys",
        "from task2vec.cli.main import main",
        "try:",
        f"    rc = main({argv!r})",
        "except SystemExit as exc:",
        "    rc = exc.code",
        f"loaded = [m for m in {forbidden!r} if m in sys.modules]",
        "assert not loaded, f'imported {loaded}'",
        "sys.exit(rc)",
    ])
    return python(code, cwd)


def test_help_imports_no_torch_nor_plotting(tmp_path):
    proc = run_cli(["--help"], HEAVY + PLOTTING, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "embed" in proc.stdout and "recommend" in proc.stdout


@pytest.mark.parametrize("kind", ["sym", "asym"])
def test_distance_imports_no_torch(real_embedding_files, tmp_path, kind):
    """asym too: the trivial task comes from the prior the embeddings record, not from the probe."""
    a, b = (str(f) for f in real_embedding_files[:2])
    proc = run_cli(["distance", a, b, "--kind", kind], HEAVY, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{kind} distance")
    assert "hymenoptera" in proc.stdout and "flowers5" in proc.stdout


def test_map_imports_no_torch(real_embedding_files, tmp_path):
    out = tmp_path / "map.png"
    proc = run_cli(["map", *(str(f) for f in real_embedding_files), "-o", str(out)], HEAVY, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "map.csv").read_text().splitlines()[0] == "name,x,y"


def test_package_root_imports_public_names_on_first_use(tmp_path):
    names = ", ".join(n for n in task2vec.__all__ if n != "__version__")
    proc = python("\n".join([
        "import sys",
        "import task2vec",
        "assert 'torch' not in sys.modules, 'import task2vec loaded torch'",
        "import task2vec.cli.main",
        "assert 'torch' not in sys.modules, 'import task2vec.cli.main loaded torch'",
        f"from task2vec import {names}",
        "assert 'torch' in sys.modules",
        "print(Task2Vec.__module__, Probe.__module__, Zoo.__module__, METHODS)",
    ]), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["task2vec.embedding.embed", "task2vec.backbones.probe", "task2vec.zoo.zoo",
                                   "('exact',", "'montecarlo',", "'empirical',", "'variational')"]


def test_package_root_names():
    from task2vec import Task2Vec, Zoo, WeightsError, check_compatible, symmetric
    from task2vec.space.distance import symmetric as distance_symmetric
    from task2vec.embedding.embed import Task2Vec as embed_Task2Vec
    from task2vec.errors import Task2VecError, WeightsError as errors_WeightsError
    from task2vec.zoo.zoo import Zoo as zoo_Zoo

    assert Task2Vec is embed_Task2Vec and Zoo is zoo_Zoo and symmetric is distance_symmetric
    assert WeightsError is errors_WeightsError and issubclass(WeightsError, Task2VecError)
    assert callable(check_compatible)
    assert {"Task2Vec", "Probe", "Zoo", "METHODS", "__version__"} <= set(dir(task2vec))
    with pytest.raises(AttributeError, match="no attribute 'Task2Vector'"):
        task2vec.Task2Vector  # noqa: B018


def test_taskmap_leaves_the_matplotlib_backend_alone(tmp_path):
    """Importing task2vec.space.taskmap and drawing a map keep the backend the caller chose."""
    proc = python("\n".join([
        "import matplotlib",
        "matplotlib.use('svg')",
        "import numpy as np",
        "import task2vec.space.taskmap as taskmap",
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()",
        "D = np.array([[0.0, 0.3, 0.5], [0.3, 0.0, 0.4], [0.5, 0.4, 0.0]])",
        "taskmap.draw(D, taskmap.classical_mds(D), ['a', 'b', 'c'], 'map.png')",
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()",
    ]), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"


def help_line(argv: list[str], flag: str, capsys) -> str:
    """The help text of ``flag`` in ``task2vec <argv> --help``, joined onto one line."""
    from task2vec.cli.main import main

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = capsys.readouterr().out
    start = text.index(f"  {flag} ")
    end = text.find("\n  -", start + 1)
    return " ".join(text[start:end if end > 0 else None].split())


def test_help_shows_the_default_that_applies(capsys):
    from task2vec.embedding.embed import Task2Vec

    max_samples = inspect.signature(Task2Vec).parameters["max_samples"].default
    assert help_line(["embed"], "--max-samples", capsys).endswith(f"(default: {max_samples})")
    for argv in (["recommend"], ["zoo", "add"]):
        line = help_line(argv, "--max-samples", capsys)
        assert line.endswith("(default: the zoo's setting)") and str(max_samples) not in line
        assert help_line(argv, "--workers", capsys).endswith("(default: 0)")  # not a zoo setting
    assert help_line(["finetune"], "--epochs", capsys).endswith("(default: 15)")
    assert help_line(["finetune"], "--hflip", capsys).endswith("(default: the preset's)")


def test_finetune_flags_are_the_trainers_hyperparameters_with_its_defaults():
    """One source for each default: a flag named like a Trainer parameter defaults to the Trainer's value,
    and every parameter without such a flag is one the command sets from another flag."""
    from task2vec.cli.main import build_parser
    from task2vec.finetune.trainer import Trainer

    flags = vars(build_parser().parse_args(["finetune", "data", "-o", "run"]))
    set_otherwise = {"amp": "--no-amp", "progress": "--quiet", "max_bad_fraction": "the Trainer's (no flag)"}
    for name, param in inspect.signature(Trainer).parameters.items():
        if name in flags:
            assert flags[name] == param.default, (name, flags[name], param.default)
        else:
            assert name in set_otherwise, f"Trainer({name}=...) has no finetune flag"
