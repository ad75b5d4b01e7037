"""The package's import graph, read from the source with `ast` (imports inside functions count too):
each user action flows one way, CLI -> loading -> sampling pipeline -> networks.

- the networks (`animatediff_jax/models/`) reach nothing of loading, convert, sampling or training;
- sampling (`animatediff_jax/sampling/`, the pipeline included) reaches neither convert nor loading:
  it builds from configs and params, no file formats inside;
- training (`animatediff_jax/train.py`, `animatediff_jax/training/`) imports from convert only what
  exports (`convert.export`, and `convert.lora.LoraWeights`, the form the exporters take); it reads its
  base model and motion module through `animatediff_jax.loading`;
- no module imports another module's private (`_name`) names.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("animatediff_jax", "convert")


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The project module a dotted import name refers to (`animatediff_jax.params.flatten` ->
    `animatediff_jax.params`), or None outside the project."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts)
        parts.pop()
    return None


@cache
def imported_names(module: str) -> tuple[tuple[str, str | None], ...]:
    """(imported module, imported name or None) for every import statement in `module`'s source."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out += [(base, alias.name) for alias in node.names]
    return tuple(out)


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Project modules `module` imports (a `from package import submodule` counts as the submodule)."""
    found = set()
    for base, name in imported_names(module):
        target = _resolve(f"{base}.{name}" if name else base)
        if target is not None and target != module:
            found.add(target)
    return frozenset(found)


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in direct_imports(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _offending(start_prefix: str, forbidden) -> dict[str, list[str]]:
    return {m: sorted(t for t in reachable(m) if _under(t, forbidden))
            for m in modules() if _under(m, [start_prefix]) and any(_under(t, forbidden) for t in reachable(m))}


def test_the_parser_sees_lazy_imports():
    """Not vacuous: imports inside functions are found (loading converts files lazily)."""
    assert "convert.base" in direct_imports("animatediff_jax.loading")
    assert {"animatediff_jax.models.unet3d", "animatediff_jax.sampling.pipeline"} <= reachable("animatediff_jax.loading")
    assert len(modules()) > 60


def test_models_reach_no_loading_convert_sampling_or_training():
    forbidden = ["animatediff_jax.loading", "convert", "animatediff_jax.sampling", "animatediff_jax.training",
                 "animatediff_jax.train", "animatediff_jax.sample"]
    assert "animatediff_jax.models.unet3d" in modules()
    assert _offending("animatediff_jax.models", forbidden) == {}


# The prompt-config parser reads the user's files: a first-release `path` is a LoRA or a DreamBooth
# by its checkpoint's key names (the original's own rule), which it reads through convert.io.
CONFIG_READERS = {"animatediff_jax.sampling.prompt_config"}


def test_sampling_reaches_no_file_formats():
    assert {"animatediff_jax.sampling.pipeline", "animatediff_jax.sampling.samplers"} <= set(modules())
    offending = _offending("animatediff_jax.sampling", ["convert", "animatediff_jax.loading"])
    assert {m: t for m, t in offending.items() if m not in CONFIG_READERS} == {}
    assert not any(_under(t, ["convert", "animatediff_jax.loading"])
                   for t in reachable("animatediff_jax.sampling.pipeline"))


def test_training_imports_convert_only_to_export():
    allowed = {("convert.export", None), ("convert.lora", "LoraWeights")}
    bad = {}
    for module in modules():
        if not _under(module, ["animatediff_jax.train", "animatediff_jax.training"]):
            continue
        for base, name in imported_names(module):
            target = _resolve(f"{base}.{name}" if name else base)
            if target and _under(target, ["convert"]) and (target, None) not in allowed \
                    and (target, name) not in allowed:
                bad.setdefault(module, []).append(f"{base}.{name}" if name else base)
    assert bad == {}


def test_no_private_names_imported_across_modules():
    bad = [f"{m}: from {base} import {name}" for m in modules() for base, name in imported_names(m)
           if name and name.startswith("_") and not name.startswith("__") and _resolve(base) != m]
    assert bad == []
