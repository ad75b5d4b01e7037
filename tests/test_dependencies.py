"""Every third-party import of the package is declared in setup.py, in the install set its module
belongs to: `install_requires` for everything, plus the `data` extra under `animatediff_jax/data/`,
plus the `torch` extra for the lazy `.ckpt` readers. A fresh `pip install -e .` must run the default
sample and the trainer; this test fails when a module starts importing a package that only happens
to be installed on the developer's machine.

The declared requirements come from the installed distribution's metadata (written from setup.py
by `pip install -e .`), the imports from the source (every `import`, including lazy ones inside
functions), and the import name -> distribution map from `importlib.metadata`.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"animatediff_jax", "convert", "tests"}
# Where a module may use an extra beyond install_requires: (path prefix, extra names).
EXTRAS_BY_PATH = (("animatediff_jax/data/", {"data"}),)
# Imports that every module may make lazily, inside a function, for an optional extra.
LAZY_EXTRAS = {"torch": "torch"}


def _declared() -> dict[str | None, set[str]]:
    """extra (None = install_requires) -> canonical distribution names."""
    out: dict[str | None, set[str]] = {}
    for text in md.requires("animatediff_jax") or []:
        req = Requirement(text)
        extra = None
        if req.marker is not None:
            extra = next((e for e in ("torch", "data", "gcs", "test") if req.marker.evaluate({"extra": e})), None)
        out.setdefault(extra, set()).add(canonicalize_name(req.name))
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, inside a function) for every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _package_files() -> list[Path]:
    return sorted(p for d in ("animatediff_jax", "convert") for p in (ROOT / d).rglob("*.py"))


def test_every_import_is_declared_in_its_install_set():
    declared = _declared()
    dists = md.packages_distributions()
    problems = []
    for path in _package_files():
        rel = path.relative_to(ROOT).as_posix()
        allowed = set(declared.get(None, set()))
        for prefix, extras in EXTRAS_BY_PATH:
            if rel.startswith(prefix):
                for e in extras:
                    allowed |= declared.get(e, set())
        for name, lazy in _imports(path):
            if name in FIRST_PARTY or name in sys.stdlib_module_names or name == "__future__":
                continue
            if lazy and name in LAZY_EXTRAS and canonicalize_name(name) in declared.get(LAZY_EXTRAS[name], set()):
                continue
            owners = {canonicalize_name(d) for d in dists.get(name, [])}
            if not owners:
                problems.append(f"{rel}: imports {name!r}, which no installed distribution provides")
            elif not owners & allowed:
                problems.append(f"{rel}: imports {name!r} (from {sorted(owners)}), not declared for this module")
    assert not problems, "\n".join(problems)


def test_torch_extra_is_only_imported_lazily():
    """`import torch` at module level would make `pip install -e .` (no torch) fail on import."""
    eager = [path.relative_to(ROOT).as_posix() for path in _package_files()
             for name, lazy in _imports(path) if name == "torch" and not lazy]
    assert not eager, eager


def test_the_checker_sees_lazy_and_eager_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import yaml\nfrom av import open as o\ndef f():\n    import torch\n    from x.y import z\n")
    assert _imports(src) == [("yaml", False), ("av", False), ("torch", True), ("x", True)]
