"""Every command-line tool answers `--help` without importing the heavy libraries (JAX, Flax, torch,
transformers, TFDS, orbax: seconds each), names itself as `python -m ...`, and shows each default
once. (How fast it answers is measured, not asserted here: this checks the cause.)"""
import re
import subprocess
import sys

import pytest

CLIS = ["animatediff_jax.sample", "animatediff_jax.train", "animatediff_jax.evaluate",
        "animatediff_jax.miniature.build", "animatediff_jax.miniature.probe", "animatediff_jax.data.build",
        "animatediff_jax.data.precompute", "convert"]
HEAVY = ("jax", "flax", "torch", "transformers", "tensorflow_datasets", "orbax", "optax", "tensorboardX")

PROBE = """
import runpy, sys
sys.argv = [{mod!r}, "--help"]
try:
    runpy.run_module({mod!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("@@HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
print("@@EXIT=" + str(code))
"""


@pytest.mark.parametrize("module", CLIS)
def test_help_is_light_and_clear(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(mod=module, heavy=HEAVY)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "@@EXIT=0" in text, text[-2000:]
    heavy = text.split("@@HEAVY=")[1].split("\n")[0]
    assert heavy == "", f"{module} --help imports {heavy}"
    usage = text.split("\n")[0]
    assert usage.startswith(f"usage: python -m {module}"), usage
    help_text = text.split("@@HEAVY=")[0]
    for entry in re.split(r"\n  (?=-)", help_text):
        assert len(re.findall(r"\(default", entry)) <= 1, entry


def test_light_copies_of_choices_equal_their_homes():
    """The CLIs keep copies of a few choice lists so that --help need not import JAX."""
    from animatediff_jax import sample_flags
    from animatediff_jax.models import attention
    from animatediff_jax.models.configs import MOTION_VERSIONS
    from animatediff_jax.sampling.samplers import SAMPLERS
    assert sample_flags.ATTENTION_IMPLEMENTATIONS == attention.IMPLEMENTATIONS
    assert set(sample_flags.MOTION_VERSIONS) == set(MOTION_VERSIONS)
    assert set(sample_flags.SCHEDULERS) == set(SAMPLERS)
