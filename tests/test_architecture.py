"""The import rule of ARCHITECTURE.md, read from the code: every module belongs to one stage, and a
module imports only from its own stage or the stages it may use. No private name crosses a module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "task2vec"

# ARCHITECTURE.md's table: stage -> its modules
STAGES = {
    "shared": ("errors", "validate", "io", "paths", "defaults", "version", "distributed", "memory"),
    "backbones": ("probe", "models", "data", "quality"),
    "embedding": ("fisher", "head", "variational", "embed", "embedding", "dsym"),
    "space": ("distance", "trivial", "taskmap"),
    "finetune": ("finetune", "runfolder", "augment", "augment_config", "mobius", "multitask", "metrics", "cam"),
    "zoo": ("zoo", "zoospec", "resolve", "index", "model2vec", "qualityprior", "records", "evidence", "transferability",
            "recommendation", "cache"),
    "cli": ("cli", "cli_embed", "cli_space", "cli_zoo", "cli_finetune", "__main__", "__init__"),
}
# stage -> the stages it may import from (besides itself)
MAY_USE = {
    "shared": (),
    "backbones": ("shared",),
    "embedding": ("shared", "backbones"),
    "space": ("shared", "backbones", "embedding"),
    "finetune": ("shared", "backbones"),
    "zoo": ("shared", "backbones", "embedding", "space", "finetune"),
    "cli": ("shared", "backbones", "embedding", "space", "finetune", "zoo"),
}
# Imports that break the rule today, each with the change that removes it (ARCHITECTURE.md, "Known
# exceptions"). The test fails on any other violation, and on an exception that no longer exists.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
STAGE_OF = {m: stage for stage, modules in STAGES.items() for m in modules}


def runtime_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (relative imports, at any depth; not ``if TYPE_CHECKING`` ones)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            out.add(node.module.split(".")[0])
        else:  # from . import a, b: the names are modules
            out.update(alias.name for alias in node.names)
    return out


def test_every_module_has_a_stage():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(STAGE_OF), (sorted(modules - set(STAGE_OF)), sorted(set(STAGE_OF) - modules))


def test_imports_run_one_way_down_the_stages():
    violations = {}
    for path in sorted(PACKAGE.glob("*.py")):
        here = STAGE_OF[path.stem]
        for dep in runtime_imports(path):
            there = STAGE_OF[dep]
            if there != here and there not in MAY_USE[here]:
                violations[(path.stem, dep)] = f"{here} -> {there}"
    assert set(violations) == set(KNOWN_EXCEPTIONS), {k: v for k, v in violations.items() if k not in KNOWN_EXCEPTIONS}


def test_nothing_imports_the_command_line():
    users = {p.stem for p in PACKAGE.glob("*.py") if STAGE_OF[p.stem] != "cli"
             and runtime_imports(p) & set(STAGES["cli"])}
    assert not users


def test_no_private_name_crosses_a_module():
    """``from task2vec.x import _y`` (tests, benchmarks) or ``from .x import _y`` (the package) is refused."""
    pattern = re.compile(r"^\s*from\s+(task2vec(\.\w+)*|\.\w*)\s+import\s+\(?([^)\n]*)", re.M)
    offenders = []
    for path in [*PACKAGE.glob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            names = [n.strip().split(" as ")[0] for n in match.group(3).split(",")]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not offenders
