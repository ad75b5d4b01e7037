"""`python -m convert inspect A B C` reports every file: an unreadable one is an `error:` line and the
others are still described (exit 1 at the end); converted folders are read; our Flax motion modules
show their version as the original files do."""
import json
import os

from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.__main__ import main
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original


def test_inspect_reports_every_file_and_fails_at_the_end(tmp_path, capsys):
    bad = tmp_path / "g.ckpt"
    bad.write_bytes(b"garbage!")
    (tmp_path / "empty").mkdir()
    write_original(original_state_dict(random_adapter("v3", (32, 64), 1)), tmp_path / "mm.ckpt")
    files = [str(bad), motion_path(MINIATURE, "B"), str(tmp_path / "missing"), os.path.join(MINIATURE, "base"),
             str(tmp_path / "empty"), str(tmp_path / "mm.ckpt")]
    assert main(["inspect", "--json", *files]) == 1
    out, err = capsys.readouterr()
    entries = [json.loads(line) for line in out.splitlines()]
    # every input in order; one that cannot be read is {"file", "error"}, its error the stderr line
    assert [os.path.basename(i["file"]) for i in entries] == [
        "g.ckpt", "motion_module_B.safetensors", "missing", "unet.safetensors", "vae.safetensors",
        "text_encoder.safetensors", "empty", "mm.ckpt"]
    errors = [i for i in entries if "error" in i]
    assert [set(i) for i in errors] == [{"file", "error"}] * 3
    assert [f"error: {i['error']}" for i in errors] == err.splitlines()
    infos = [i for i in entries if "error" not in i]
    assert infos[0]["kind"] == "flax" and infos[0]["version"] == "v2"  # as for the original files:
    assert infos[-1]["kind"] == "motion_module" and infos[-1]["version"] == "v3"
    assert [i["config_class"] for i in infos[1:4]] == ["UNetConfig", "VAEConfig", "CLIPTextConfig"]
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert lines[0].startswith(f"error: {bad}: not a PyTorch checkpoint")
    assert lines[1].startswith(f"error: {tmp_path / 'missing'}: ")
    assert lines[2].startswith(f"error: {tmp_path / 'empty'}: a folder that is not a model folder")
    assert main(["inspect", motion_path(MINIATURE, "B")]) == 0
    assert "  version      v2\n" in capsys.readouterr().out


def test_inspect_of_a_device_says_it_is_not_a_regular_file(tmp_path, capsys):
    assert main(["inspect", os.devnull, str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {os.devnull}: not a regular file",
                                                    f"error: {tmp_path / 'missing'}: no such file"]
