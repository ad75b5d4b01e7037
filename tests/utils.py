"""Helpers shared by the tests."""
import numpy as np


def rel_err(ours, ref) -> float:
    """‖ours − ref‖ / ‖ref‖ in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))
