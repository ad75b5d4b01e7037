"""Video-caption data: the procedural world, TFDS builders, pre-computed latents, the input pipeline."""
from __future__ import annotations

import importlib.util

from animatediff_jax.errors import UserError

DATA_EXTRA = ("tensorflow_datasets", "array_record")  # what TFDS datasets (ArrayRecord) need: the `data` extra


def require_data_extra(purpose: str) -> None:
    """UserError naming the first package of the `data` extra that is not installed (found without importing
    it) and the install command, e.g. 'tensorflow_datasets: not installed, but needed to write datasets'."""
    for name in DATA_EXTRA:
        if importlib.util.find_spec(name) is None:
            raise UserError(f'{name}: not installed, but needed {purpose} (pip install -e ".[data]")')
