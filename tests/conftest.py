"""Test-wide settings: float32 parity needs full-precision matmuls on every backend."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def rel_err(ours, ref) -> float:
    """‖ours − ref‖ / ‖ref‖ in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:
        yield
        return
    torch.manual_seed(0)
    yield
