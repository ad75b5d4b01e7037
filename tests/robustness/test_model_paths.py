"""A model path given to the wrong flag, an empty folder, a garbage checkpoint (a stranger's findings):
one line naming the flag and the file, what it is and which flag takes it, before any model loads."""
import os
import sys

import pytest

from animatediff_jax import sample
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.__main__ import main as convert_main

BASE = os.path.join(MINIATURE, "base")
UNET = os.path.join(BASE, "unet.safetensors")
MOTION = motion_path(MINIATURE, "B")


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))

    def go(*flags):
        code = sample.main([*flags, "--prompt", "a cat", "--out", str(tmp_path / "out")])
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert not (tmp_path / "out").exists()
        return code, lines[0]
    return go


@pytest.mark.parametrize("flags,code,line", [
    (["--dreambooth", UNET], 2, f"error: --dreambooth {UNET}: a converted UNet alone (Flax params), not what "
                                f"--dreambooth takes; --base or --dreambooth take the folder holding it ({BASE})"),
    (["--base", UNET], 2, f"error: --base {UNET}: a converted UNet alone (Flax params), not what --base takes; "
                          f"--base or --dreambooth take the folder holding it ({BASE})"),
    (["--dreambooth", MOTION], 2, f"error: --dreambooth {MOTION}: a converted motion module (v2), not what "
                                  "--dreambooth takes; --motion-module takes it"),
    (["--motion-module", BASE], 2, f"error: --motion-module {BASE}: a converted SD1.x model folder, not what "
                                   "--motion-module takes; --base or --dreambooth take it"),
    (["--lora", MOTION], 2, f"error: --lora {MOTION}: a converted motion module (v2), not what --lora takes; "
                            "--motion-module takes it"),
])
def test_our_files_given_to_the_wrong_flag(run, flags, code, line):
    assert run(*flags) == (code, line)


def test_an_empty_base_folder_says_what_was_expected(run, tmp_path):
    (tmp_path / "empty").mkdir()
    code, line = run("--base", str(tmp_path / "empty"))
    assert code == 1
    assert line.startswith(f"error: --base {tmp_path / 'empty'}: no SD1.x model here: expected a diffusers SD1.x "
                           "folder")


def test_a_converted_folder_without_tokenizer_is_not_called_a_single_file(run):
    code, line = run("--base", os.path.join(MINIATURE, "dreambooth"))
    assert code == 2 and "(a folder without tokenizer/)" in line and "single file" not in line


@pytest.mark.parametrize("torch_installed", [True, False])
def test_garbage_ckpt_is_not_a_checkpoint_with_or_without_torch(run, tmp_path, monkeypatch, capsys, torch_installed):
    if not torch_installed:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    bad = tmp_path / "g.ckpt"
    bad.write_bytes(b"garbage!")
    want = f"{bad}: not a PyTorch checkpoint (neither a zip archive nor a pickle); corrupt or truncated?"
    code, line = run("--dreambooth", str(bad))
    assert code == 1 and line.endswith(want), line
    assert convert_main(["base", str(bad), str(tmp_path / "conv"), "-q"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {want}"]
