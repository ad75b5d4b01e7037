"""The README's CPU training recipe (configs/training/miniature.yaml), link by link, short of training
steps (a 2-step run compiles the train step and the validation sampler: minutes on 2 cores): training
reads the shipped miniature base, a converted folder it could not read before; and what the config's
export writes is a motion module the sampler loads into that base with the shipped module's heads and
groups (an original .ckpt would lose them)."""
import os

import numpy as np

from animatediff_jax.checkpoint import load_params
from animatediff_jax.loading import ModelFiles, check_files, load_motion, read_base
from animatediff_jax.miniature import world
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from animatediff_jax.params import flatten
from animatediff_jax.training import trainer
from animatediff_jax.training.config import load_config

BASE = os.path.join(MINIATURE, "base")
CONFIG = "configs/training/miniature.yaml"  # relative, as the README gives it: run from the repository root


def test_training_reads_the_shipped_base_a_converted_folder():
    base = read_base(BASE, dtype="float32")              # what trainer.build_models reads
    assert base.unet_config == world.UNET and base.tokenizer_path == os.path.join(BASE, "tokenizer")
    stored, _ = load_params(os.path.join(BASE, "unet.safetensors"))
    read = flatten(base.unet)
    assert read.keys() == flatten(stored).keys()
    for path, value in flatten(stored).items():
        assert read[path].dtype == np.float32, path
        np.testing.assert_array_equal(read[path], np.asarray(value, np.float32), err_msg="/".join(path))


def test_the_recipes_export_is_a_module_the_sampler_loads_into_the_shipped_base(tmp_path):
    cfg = load_config(CONFIG)
    cache = str(tmp_path / "cache")
    trained = load_motion(motion_path(MINIATURE, "B"), cache).params   # a module of the recipe's shape
    written = trainer.export(cfg, str(tmp_path), trained, cfg.motion_config, step=1)
    assert written == [str(tmp_path / "motion_adapter")]   # export_formats: [diffusers], no torch needed
    assert load_motion(written[0], cache).config == world.MOTION
    check_files(ModelFiles(BASE, motion_module=written[0]), cache)
