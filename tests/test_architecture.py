"""The import rule of ARCHITECTURE.md, read from the code: every module sits in one stage (its
sub-package, or the shared bottom), and imports only from its own stage or the stages it may use.
No private name crosses a module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "task2vec"

# the shared bottom: the package's top-level modules (the API root and `python -m` excepted)
SHARED = ("errors", "validate", "io", "paths", "defaults", "version", "data", "distributed", "memory")
STAGES = ("backbones", "embedding", "space", "zoo", "finetune", "cli")
# stage -> the stages it may import from (besides itself)
MAY_USE = {
    "shared": (),
    "backbones": ("shared",),
    "embedding": ("shared", "backbones"),
    "space": ("shared", "backbones", "embedding"),
    "finetune": ("shared", "backbones"),
    "zoo": ("shared", "backbones", "embedding", "space", "finetune"),
    "cli": ("shared", "backbones", "embedding", "space", "finetune", "zoo"),
    "root": ("shared",),  # task2vec/__init__.py names the public API lazily: it imports only the version
}


def modules() -> dict[str, Path]:
    """Dotted module name (``embedding.fisher``) -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts)] = path
    return out


def stage_of(module: str) -> str:
    head = module.split(".")[0]
    if head in STAGES:
        return head
    if module == "__main__":
        return "cli"
    if module == "__init__":
        return "root"
    return "shared" if head in SHARED else "unknown"


def runtime_imports(module: str, path: Path) -> set[str]:
    """The package modules ``path`` imports (relative imports, at any depth; not ``if TYPE_CHECKING`` ones)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    package = module.split(".")[:-1] if not module.endswith("__init__") else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        if node.module:
            out.add(".".join([*base, *node.module.split(".")]))
        else:  # from . import a, b: the names are modules
            out.update(".".join([*base, alias.name]) for alias in node.names)
    return {m for m in out if m}


def test_every_module_has_a_stage():
    unknown = sorted(m for m in modules() if stage_of(m) == "unknown")
    assert not unknown, f"modules outside every stage (add them to a stage package or SHARED): {unknown}"


def test_the_shared_bottom_is_what_architecture_md_lists():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top == set(SHARED)
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == set(STAGES)


def test_imports_run_one_way_down_the_stages():
    violations = {}
    for module, path in sorted(modules().items()):
        here = stage_of(module)
        for dep in runtime_imports(module, path):
            there = stage_of(dep)
            if there != here and there not in MAY_USE[here]:
                violations[(module, dep)] = f"{here} -> {there}"
    assert not violations


def test_nothing_imports_the_command_line():
    users = {m for m, p in modules().items() if stage_of(m) != "cli"
             and any(stage_of(d) == "cli" for d in runtime_imports(m, p))}
    assert not users


def test_the_stage_packages_import_nothing_themselves():
    for stage in STAGES:
        tree = ast.parse((PACKAGE / stage / "__init__.py").read_text(encoding="utf-8"))
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], stage


def test_tests_mirror_the_packages():
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and list(p.glob("test_*.py"))}
    assert folders <= set(STAGES), sorted(folders - set(STAGES))


def test_no_private_name_crosses_a_module():
    pattern = re.compile(r"^\s*from\s+(task2vec(\.\w+)*|\.+\w*(\.\w+)*)\s+import\s+\(?([^)\n]*)", re.M)
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            names = [n.strip().split(" as ")[0] for n in match.group(4).split(",")]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not offenders
