"""Helpers shared by the tests."""
import json
from pathlib import Path

import jax
import numpy as np


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
