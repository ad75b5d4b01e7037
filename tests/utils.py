"""Helpers shared by the tests."""
import json
import os
from pathlib import Path

import jax
import numpy as np
from huggingface_hub import constants

HUB_COMMIT = "a" * 40  # the commit `cache_repo` files a snapshot under by default


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test's subprocess: `devices` simulated CPU devices, at the suite's backend
    optimisation level (tests/conftest.py)."""
    level = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_backend_optimization_level")]
    return " ".join([f"--xla_force_host_platform_device_count={devices}", *level])


def rel_err(ours, ref) -> float:
    """‖ours − ref‖ / ‖ref‖ in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))


def random_params(module, seed, *example, **kw):
    """Random params of a Flax module's shapes without running its (slow on CPU) initialisers:
    kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1²), biases ~ N(0, 0.1²) (so every weight
    kind is exercised, unlike `pipeline.random_params`' ones and zeros)."""
    shapes = jax.eval_shape(lambda k: module.init(k, *example, **kw)["params"], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(leaf.shape, np.float32)
        if name == "bias":
            return 0.1 * rng.standard_normal(leaf.shape, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def write_tokenizer(folder) -> str:
    """A CLIP BPE tokenizer folder over lowercase letters and ',' (no merges): 56 tokens,
    <|startoftext|> = 54, <|endoftext|> = 55."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz,")
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder)


def cache_repo(cache, repo_id: str, make, ref: str = "main", commit: str = HUB_COMMIT) -> Path:
    """A repository's snapshot in a Hugging Face cache laid out as the hub lays it out
    (`models--<owner>--<name>/snapshots/<commit>/`, `refs/<ref>` holding the commit): `make(folder)`
    writes the snapshot's files (`shutil.copytree(src, folder)`, `model.save_pretrained(folder)`, ...).
    Returns the snapshot folder, what `convert.sources.resolve_source(repo_id)` resolves to."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    make(str(snapshot))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def use_hub_cache(cache, monkeypatch) -> Path:
    """huggingface_hub pointed at the cache folder `cache` (created), offline, for the test's duration:
    the environment a fresh process reads, and the constants huggingface_hub read at its import."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def as_variants(folder, *variants: str) -> Path:
    """`folder`'s whole weights files (`<stem>.safetensors` / `.bin`, plain or one variant's, in any
    subfolder) each replaced by a copy per variant (`<stem>.fp16.safetensors`, `<stem>.bf16...`): a
    folder holding several variants and no plain weights. Returns the folder."""
    from convert.sources import parse_weights_name  # the names convert/ reads (convert.io imports flax)
    for path in sorted(Path(folder).rglob("*")):
        parsed = parse_weights_name(path.name) if path.is_file() else None
        if parsed is None or parsed[3]:  # not a weights file, or a shard index
            continue
        stem, _, ext, _ = parsed
        names = [f"{stem}.{variant}.{ext}" for variant in variants]
        for name in names:
            if name != path.name:
                (path.parent / name).write_bytes(path.read_bytes())
        if path.name not in names:
            path.unlink()
    return Path(folder)
