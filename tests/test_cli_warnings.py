"""Every command run as a program shows Python warnings as one `warning: <message>` line (no file, line
number or echoed source line: a tester saw `convert motion` print `warnings.warn(f"{source}: ...")`)."""
import ast
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.sampling import tiny_models as tm
from tests.test_import_graph import modules


def _main_block(tree: ast.Module) -> ast.If | None:
    return next((node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)),
                None)


def test_every_program_shows_warnings_as_plain_lines():
    programs = {}
    for name, path in modules().items():
        block = _main_block(ast.parse(path.read_text(encoding="utf-8")))
        if block is not None:
            programs[name] = [ast.unparse(s) for s in block.body]
    assert {"animatediff_jax.sample", "animatediff_jax.train", "convert.__main__"} <= set(programs)
    for name, body in programs.items():
        assert body[0] == "plain_warnings()", (name, body)


def test_a_conversion_warning_is_one_plain_line(tmp_path):
    adapter = tm.write_adapter_folder(str(tmp_path / "adapter"))
    original = tmp_path / "mm.safetensors"
    tm.write_original_motion_module(adapter, str(original))
    tensors = load_file(str(original))  # as in a full training checkpoint: an image-UNet key, ignored with a warning
    save_file({**tensors, "conv_in.weight": np.zeros((4, 4, 3, 3), np.float32)}, str(original))
    result = subprocess.run([sys.executable, "-m", "convert", "motion", str(original), str(tmp_path / "out.safetensors")],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="default"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "warn" in line.lower()]
    assert lines and all(line.startswith("warning: ") for line in lines), result.stderr
    assert "ignoring 1 image-UNet keys" in result.stderr
