"""An original-format file (a .ckpt pickle, a .safetensors re-save) stores neither heads nor GroupNorm
groups: the motion commands say which they assumed (the original's 8 and 32) and how to give the
module's (--heads / --norm-groups), and refuse values that do not fit the weights before writing."""
import json
import os

import pytest
import torch
from diffusers import MotionAdapter

from convert.__main__ import main
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A module as our trainer writes one: 4 heads, 16 groups, saved as a .ckpt."""
    d = tmp_path_factory.mktemp("assumed")
    adapter = random_adapter("v2", (32, 64), 1, heads=4, groups=16)
    write_original(original_state_dict(adapter), d / "mm_trained.ckpt", wrapper=True)
    return adapter, d / "mm_trained.ckpt"


def _geometry(folder) -> tuple[int, int]:
    cfg = json.loads((folder / "config.json").read_text())
    return cfg["motion_num_attention_heads"], cfg["motion_norm_num_groups"]


def test_export_to_diffusers_says_what_it_assumed(tmp_path, trained, capsys):
    _, src = trained
    assert main(["export-motion", str(src), str(tmp_path / "adapter"), "-q"]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {src}: an original-format file stores neither attention heads nor GroupNorm groups; "
                   "assumed 8 attention heads and 32 GroupNorm groups (the original's defaults): if the module was "
                   "trained with others, pass --heads N --norm-groups N\n")
    assert _geometry(tmp_path / "adapter") == (8, 32)  # what the warning said
    # one given: only the other is named
    assert main(["export-motion", str(src), str(tmp_path / "half"), "--heads", "4", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "assumed 32 GroupNorm groups (the original's default): " in err
    assert err.endswith("pass --norm-groups N\n") and "--heads" not in err
    assert _geometry(tmp_path / "half") == (4, 32)


def test_heads_and_groups_flags_reach_the_config(tmp_path, trained, capsys):
    adapter, src = trained
    out = tmp_path / "adapter"
    assert main(["export-motion", str(src), str(out), "--heads", "4", "--norm-groups", "16", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert _geometry(out) == (4, 16)
    loaded = MotionAdapter.from_pretrained(out)
    assert (loaded.config.motion_num_attention_heads, loaded.config.motion_norm_num_groups) == (4, 16)
    for k, v in adapter.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=1e-5 if k.endswith(".pe") else 0)


def test_where_the_guess_is_kept_or_dropped(tmp_path, trained, capsys):
    """`motion` stores the config (so it warns); an export to a pickle records no heads or groups (no
    warning); an original .safetensors keeps them in its metadata (so it warns)."""
    _, src = trained
    assert main(["motion", str(src), str(tmp_path / "mm.safetensors"), "-q"]) == 0
    assert capsys.readouterr().err.startswith(f"warning: {src}: an original-format file stores neither")
    assert main(["export-motion", str(src), str(tmp_path / "again.ckpt"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["export-motion", str(src), str(tmp_path / "again.safetensors"), "-q"]) == 0
    assert "assumed 8 attention heads and 32 GroupNorm groups" in capsys.readouterr().err


def test_values_that_do_not_fit_the_weights_are_one_error_before_writing(tmp_path, trained, capsys):
    _, src = trained
    out = tmp_path / "adapter"
    assert main(["export-motion", str(src), str(out), "--heads", "3", "--norm-groups", "16", "-q"]) == 1
    assert capsys.readouterr().err == f"error: {src}: 32 channels are not divisible by heads=3\n"
    # the default a file leaves unsaid does not fit 48 channels: the error says it was assumed and how to say it
    src48 = tmp_path / "mm48.ckpt"
    write_original(original_state_dict(random_adapter("v2", (48, 96), 1, heads=4, groups=16)), src48)
    assert main(["export-motion", str(src48), str(out), "--heads", "4", "-q"]) == 1
    assert capsys.readouterr().err == (
        f"error: {src48}: 48 channels are not divisible by norm_num_groups=32 (the original's default, assumed: "
        "an original-format file stores no heads or groups; give the module's with --motion-norm-groups N "
        "(python -m animatediff_jax.sample), --norm-groups N (python -m convert) or norm_num_groups= (Python))\n")
    assert sorted(os.listdir(tmp_path)) == ["mm48.ckpt"]  # nothing half-written


def test_flags_that_contradict_what_a_file_states_are_refused(tmp_path, trained, capsys):
    """A MotionAdapter folder's config.json (and our original-format .safetensors' metadata) state heads and
    groups: --heads 8 --norm-groups 32 against a 4/16 folder wrote an 8/32 config without a word."""
    _, src = trained
    assert main(["export-motion", str(src), str(tmp_path / "ad"), "--heads", "4", "--norm-groups", "16", "-q"]) == 0
    assert main(["export-motion", str(src), str(tmp_path / "mm.safetensors"), "--heads", "4", "--norm-groups", "16",
                 "-q"]) == 0
    capsys.readouterr()
    for stated, where in ((tmp_path / "ad", "config.json motion_num_attention_heads"),
                          (tmp_path / "mm.safetensors", "metadata")):
        assert main(["export-motion", str(stated), str(tmp_path / "back.safetensors"), "--heads", "8", "-q"]) != 0
        err = capsys.readouterr().err
        assert err.startswith(f"error: {stated}: its {where}") and "says 4 attention heads, not the 8 asked for" in err
        assert err.count("\n") == 1 and not (tmp_path / "back.safetensors").exists()
    # the same values as stated pass
    assert main(["export-motion", str(tmp_path / "ad"), str(tmp_path / "same"), "--heads", "4", "--norm-groups", "16",
                 "-q"]) == 0
    assert _geometry(tmp_path / "same") == (4, 16)
