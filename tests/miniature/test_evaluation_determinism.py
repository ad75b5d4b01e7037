"""The same evaluation on the same weights gives the same table (issue 15): nothing in the scores may
depend on the process (string-hash randomization, i.e. set order), only on the frames."""
import os
import subprocess
import sys

import numpy as np

from animatediff_jax.miniature import scoring

TIED = """
import numpy as np
from animatediff_jax.miniature import scoring
names = ["red", "red", "blue", "blue", None, "green"]
t = scoring.Track(np.array([n is not None for n in names]), np.zeros((6, 2)), np.full(6, 10.0), names, np.zeros((6, 2)))
print(scoring.majority_color(t), scoring.consistency(t))
"""


def _env(hash_seed: int) -> dict:
    return dict(os.environ, PYTHONHASHSEED=str(hash_seed))


def test_tied_colours_score_the_same_in_every_process():
    """Two colours in equally many frames: the first seen wins, whatever the process's hash seed."""
    outs = {subprocess.run([sys.executable, "-c", TIED], env=_env(s), capture_output=True, text=True,
                           check=True).stdout.strip() for s in range(8)}
    assert outs == {"red 0.3333333333333333"}


def test_majority_is_the_most_frequent_then_the_first_seen():
    assert scoring._majority(["blue", "red", "red"]) == "red"
    assert scoring._majority(["blue", "red", "red", "blue"]) == "blue"
    assert np.isclose(scoring.consistency(scoring.Track(np.ones(2, bool), np.zeros((2, 2)), np.ones(2) * 9,
                                                        ["green", "red"], np.zeros((2, 2)))), 0.5)


def _table(hash_seed: int, cache: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "animatediff_jax.evaluate", "--samples", "3", "--steps", "1",
                          "--rows", "base + module", "--results", "-"],
                         env=dict(_env(hash_seed), ANIMATEDIFF_JAX_CACHE=cache), capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("|---|")) + 1:]
    return [line for line in rows if line.startswith("| ")]  # the table's rows


def test_a_tiny_evaluation_twice_gives_the_same_table(tmp_path):
    """Two processes (different hash seeds, as two runs of the command have) on the shipped weights."""
    first, second = _table(1, str(tmp_path / "cache")), _table(2, str(tmp_path / "cache"))
    assert len(first) == 5 and first[-1].startswith("| base + module | B | 3 |")  # 4 reference rows, then it
    assert first == second
