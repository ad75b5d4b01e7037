"""The evaluation table's 95% confidence intervals (issue 15: "with confidence intervals")."""
import math

import numpy as np

from animatediff_jax import evaluate


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_yes_no_scores_get_wilson_intervals():
    for k, n in ((16, 32), (0, 32), (32, 32), (3, 40)):
        low, high = evaluate.interval([1.0] * k + [0.0] * (n - k), yes_no=True)
        want = _wilson(k, n)
        assert abs(low - want[0]) < 1e-6 and abs(high - want[1]) < 1e-6, (k, n)
    assert evaluate.interval([1.0] * 32, yes_no=True)[0] > 0.89  # 32 of 32 cannot claim more than ~90%


def test_fraction_intervals_hold_the_mean_are_reproducible_and_narrow_with_samples():
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0.4, 1.0, 32), rng.uniform(0.4, 1.0, 512)
    low, high = evaluate.interval(small, yes_no=False)
    assert low < small.mean() < high
    assert evaluate.interval(small, yes_no=False) == (low, high)
    large_low, large_high = evaluate.interval(large, yes_no=False)
    assert large_high - large_low < (high - low) / 2
    assert evaluate.interval([0.75] * 32, yes_no=False) == (0.75, 0.75)


def test_a_cell_shows_the_mean_and_its_interval():
    row = {"name": "r", "module": "B", "samples": 32, "seeds": "0..31"}
    scores = {key: (0.5, 0.25, 0.75) for key in evaluate.METRICS}
    line = evaluate.format_row({**row, **scores, "motion": None})
    assert line.startswith("| r | B | 32 | 0..31 | – | 50% (25–75) |") and line.count("50% (25–75)") == 5
