"""Video-caption data: the procedural world, TFDS builders, pre-computed latents, the input pipeline."""
from __future__ import annotations

import argparse
import importlib.util
import re

from animatediff_jax.errors import UserError

DATA_EXTRA = ("tensorflow_datasets", "array_record")  # what TFDS datasets (ArrayRecord) need: the `data` extra
# A dataset's --name: its TFDS config name (TFDS parses `dataset/config` names of [\w+.-] only) and one folder,
# starting like an identifier (never '.', '..', a hidden folder or a flag)
CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")  # at most 100 characters: one folder name


def require_data_extra(purpose: str) -> None:
    """UserError naming the first package of the `data` extra that is not installed (found without importing
    it) and the install command, e.g. 'tensorflow_datasets: not installed, but needed to write datasets'."""
    for name in DATA_EXTRA:
        if importlib.util.find_spec(name) is None:
            raise UserError(f'{name}: not installed, but needed {purpose} (pip install -e ".[data]")')


def config_name(text: str) -> str:
    """argparse `type=` of a dataset's --name (`CONFIG_NAME`; `bad name!` built `procedural_videos/bad name!/`)."""
    if not CONFIG_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a TFDS config name: up to 100 ASCII letters, digits and _ . + -, "
                                         f"starting with a letter, digit or _, got {text!r}")
    return text
