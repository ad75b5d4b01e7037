"""Progress bars end their own line before the next output: a log or pipe (no terminal to clear a bar
with a carriage return) showed `merging:   0%| … /tmp/m1.safetensors` and `writing unet: 0% … error: …`."""
import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
from safetensors.numpy import save_file

from animatediff_jax.checkpoint import save_params
from animatediff_jax.errors import InputError, run_cli
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.progress import progress_bar
from convert.__main__ import main


def _lines(work) -> tuple[int, list[str]]:
    """Exit code and the `\\n`-separated lines of stdout and stderr together, as a log of the run shows them."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = work()
    return code, out.getvalue().split("\n")


def _inputs(tmp_path, bad=False):
    paths = [str(tmp_path / f"m{i}.safetensors") for i in range(2)]
    for i, p in enumerate(paths):
        save_file({f"t{j}": np.full(3, np.nan if bad and j == 1 else i, np.float32) for j in range(4)}, p)
    return paths


def test_merge_prints_its_output_on_a_line_of_its_own(tmp_path):
    out = str(tmp_path / "out.safetensors")
    code, lines = _lines(lambda: main(["merge", out, *_inputs(tmp_path)]))
    assert code == 0 and "merging" in "".join(lines) and lines[-2:] == [out, ""], lines


def test_merge_error_mid_bar_starts_its_own_line(tmp_path):
    code, lines = _lines(lambda: main(["merge", str(tmp_path / "out.safetensors"), *_inputs(tmp_path, bad=True)]))
    assert code == 1 and "merging" in "".join(lines) and lines[-2].startswith("error: "), lines


def test_writing_params_error_starts_its_own_line(tmp_path):
    path = str(tmp_path / "unet.safetensors")

    def work():
        save_params(path, {"w": np.array([1.0, np.nan], np.float32)}, nonfinite=NonFinite(path, allow=False),
                    progress="writing unet")
    code, lines = _lines(lambda: run_cli(work))
    assert code == 1 and "writing unet" in "".join(lines) and lines[-2].startswith("error: "), lines


def test_a_bar_ends_its_line_when_an_exception_escapes():
    def work():
        with progress_bar("converting", total=4) as bar:
            bar.update()
            raise InputError("a.safetensors: broken")
    code, lines = _lines(lambda: run_cli(work))
    assert code == 1 and lines[-2:] == ["error: a.safetensors: broken", ""] and "converting" in lines[-3], lines
