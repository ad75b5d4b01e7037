"""What a motion-module file shows is not silently contradicted: a stored position encoding other than
the sinusoid (which the network regenerates) is refused unless `--replace-pe`; keys out of the original
layout are refused, by `convert motion` and `convert inspect` alike; a `--version` / `--max-seq-length`
other than the file's is used with a warning naming both (a converted file's version is fixed)."""
import re
import warnings

import numpy as np
import pytest
import torch

from animatediff_jax import loading
from animatediff_jax.params import flatten
from convert.__main__ import main
from convert.motion import MotionModuleError, load_motion_module
from tests.convert.motion_helpers import adapter_flax, original_state_dict, random_adapter, write_original

TINY = ["--heads", "2", "--norm-groups", "8", "-q"]


def _file(tmp_path, version="v2", name="mm.ckpt", edit=None):
    """(adapter, path) of a tiny original-format file, its state dict changed by `edit` first."""
    adapter = random_adapter(version)
    sd = original_state_dict(adapter)
    if edit is not None:
        sd = edit(sd)
    write_original(sd, tmp_path / name)
    return adapter, tmp_path / name


def _pe(sd, value):
    """Every pos_encoder.pe buffer replaced by `value(buffer)`."""
    return {k: value(v) if k.endswith("pos_encoder.pe") else v for k, v in sd.items()}


def _stretched(pe):
    """The sinusoid's positions at half speed (a length-stretched encoding: position p holds p / 2's row)."""
    length, channels = pe.shape[1:]
    pos = torch.arange(length).unsqueeze(1) / 2
    div = torch.exp(torch.arange(0, channels, 2) * (-np.log(10000.0) / channels))
    out = torch.zeros_like(pe)
    out[0, :, 0::2], out[0, :, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return out


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


# ----------------------------------------------------------------------------- 1. the stored position encoding

@pytest.mark.parametrize("value", [lambda pe: pe + 0.1 * torch.randn_like(pe), _stretched,
                                   lambda pe: torch.full_like(pe, float("nan"))], ids=["trained", "stretched", "nan"])
def test_a_position_encoding_other_than_the_sinusoid_is_refused(tmp_path, value):
    _, path = _file(tmp_path, edit=lambda sd: _pe(sd, value))
    with pytest.raises(MotionModuleError) as e:
        load_motion_module(path, heads=2, norm_num_groups=8)
    msg = str(e.value)
    assert msg.startswith(f"{path}: its stored position encoding (") and "not the standard sinusoid" in msg
    assert re.search(r"max abs difference (nan|\d[\d.]*)\)", msg)
    assert "behaves differently than in the original AnimateDiff and diffusers" in msg and "--replace-pe" in msg


def test_replace_pe_converts_it_with_a_warning_naming_the_difference(tmp_path):
    adapter, path = _file(tmp_path, edit=lambda sd: _pe(sd, lambda pe: pe + 0.25))
    with pytest.warns(UserWarning, match=r"not the standard sinusoid \(max abs difference 0\.25\).*behaves "
                                         r"differently .*; the sinusoid is used in its place"):
        mm = load_motion_module(path, heads=2, norm_num_groups=8, replace_pe=True)
    for p, v in flatten(adapter_flax(adapter)).items():
        np.testing.assert_array_equal(np.asarray(flatten(mm.params)[p]), v)


def test_convert_motion_refuses_it_unless_replace_pe(tmp_path, capsys):
    _, path = _file(tmp_path, edit=lambda sd: _pe(sd, lambda pe: pe + 0.25))
    out = tmp_path / "out.safetensors"
    assert main(["motion", str(path), str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: its stored position encoding") and err.count("\n") == 1
    assert not out.exists()
    with pytest.warns(UserWarning, match="max abs difference 0.25"):
        assert main(["motion", str(path), str(out), *TINY, "--replace-pe"]) == 0
    # a converted file stores no position encoding: the flag is not used there
    assert main(["motion", str(out), str(tmp_path / "again.safetensors"), "--replace-pe"]) == 2
    assert "--replace-pe: not used" in capsys.readouterr().err
    # bfloat16 rounding of the sinusoid (< 4e-3) is the sinusoid: converted, no warning
    _, rounded = _file(tmp_path, name="bf16.safetensors", edit=lambda sd: {k: v.bfloat16() for k, v in sd.items()})
    assert _no_warnings(lambda: main(["motion", str(rounded), str(tmp_path / "bf16_out.safetensors"), *TINY])) == 0


def test_the_sampler_and_training_loader_refuse_it_too(tmp_path):
    """`sample --motion-module` and training read through `loading.load_motion` / `read_motion_module`:
    refused there too (nothing cached), the message saying how to convert it anyway."""
    _, path = _file(tmp_path, edit=lambda sd: _pe(sd, lambda pe: pe + 0.25))
    cache = tmp_path / "cache"
    with pytest.raises(MotionModuleError, match=r"not the standard sinusoid.*--replace-pe` \(python -m convert motion"):
        loading.load_motion(str(path), str(cache), heads=2, norm_num_groups=8)
    assert not (cache / "converted").exists() or not list((cache / "converted").iterdir())
    with pytest.raises(MotionModuleError, match="not the standard sinusoid"):
        loading.read_motion_module(str(path), heads=2, norm_num_groups=8)


# ----------------------------------------------------------------------------- 2. keys out of the original layout

def _misplaced(sd):
    """`motion_modules.<i>.temporal_transformer.` written `motion_modules.temporal_transformer.<i>.`."""
    return {re.sub(r"motion_modules\.(\d+)\.temporal_transformer\.", r"motion_modules.temporal_transformer.\1.", k): v
            for k, v in sd.items()}


def _mixed(sd):
    """One transformer block's norms under the MotionAdapter's name (norm1) in an original-format file."""
    return {k.replace(".norms.0.", ".norm1.") if k.startswith("up_blocks.1.") else k: v for k, v in sd.items()}


def _pe_elsewhere(sd):
    """The position encodings one level up, beside the transformer block instead of its attention."""
    return {k.replace(".attention_blocks.0.pos_encoder.pe", ".pos_encoder.pe"): v for k, v in sd.items()}


@pytest.mark.parametrize("edit,bad", [
    (_misplaced, r"down_blocks\.0\.motion_modules\.temporal_transformer\.0\.\S+"),
    (_mixed, r"up_blocks\.1\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.0\.norm1\.(weight|bias)"),
    (_pe_elsewhere, r"down_blocks\.0\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.0\.pos_encoder\.pe"),
], ids=["module-index-moved", "mixed-naming", "pe-elsewhere"])
def test_keys_out_of_the_original_layout_are_refused_by_convert_and_inspect(tmp_path, capsys, edit, bad):
    _, path = _file(tmp_path, edit=edit)
    expected = rf"error: {re.escape(str(path))}: not a valid motion module: key {bad} is not in the original AnimateDiff layout"
    for argv in (["motion", str(path), str(tmp_path / "out.safetensors"), *TINY], ["inspect", str(path)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert re.match(expected, err) and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "out.safetensors").exists()


def test_misplaced_key_accepts_every_original_key():
    from convert.motion import misplaced_key
    sd = original_state_dict(random_adapter("v2"))
    assert misplaced_key(sd) is None and misplaced_key(_misplaced(sd)) is not None


# ----------------------------------------------------------------------------- 3. flags against the file

@pytest.mark.parametrize("folder", [False, True], ids=["original", "motion-adapter"])
@pytest.mark.parametrize("length", [64, 16])
def test_a_max_seq_length_other_than_the_files_warns_naming_both(tmp_path, capsys, length, folder):
    adapter, path = _file(tmp_path)  # v2: 32 positions
    if folder:  # config.json and pos_embed.pe both say 32
        adapter.save_pretrained(tmp_path / "adapter")
        path = tmp_path / "adapter"
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))}: max_seq_length {length} given, but the file's "
                                         rf"position encoding has 32 positions; the module is converted with "
                                         rf"{length} \(it was trained with at most 32\)"):
        assert main(["motion", str(path), str(tmp_path / "out.safetensors"), *TINY, "--max-seq-length", str(length)]) == 0
    assert f"max_seq_length {length}" in capsys.readouterr().out
    _no_warnings(lambda: main(["motion", str(path), str(tmp_path / "same.safetensors"), *TINY, "--max-seq-length", "32"]))


@pytest.mark.parametrize("file_version,given,length", [("v1", "v3", 24), ("v3", "v1", 32)])
def test_a_version_other_than_the_files_warns_naming_both(tmp_path, capsys, file_version, given, length):
    _, path = _file(tmp_path, version=file_version)
    with pytest.warns(UserWarning, match=rf"given version {given} .*, but the file's position encoding has {length} "
                                         rf"positions, which makes it {file_version}; the module is converted as {given}"):
        assert main(["motion", str(path), str(tmp_path / "out.safetensors"), *TINY, "--version", given]) == 0
    assert f"motion module {given}, max_seq_length {length}" in capsys.readouterr().out
    _no_warnings(lambda: main(["motion", str(path), str(tmp_path / "same.safetensors"), *TINY,
                               "--version", file_version]))


def test_a_converted_files_version_is_fixed(tmp_path, capsys):
    _, path = _file(tmp_path, version="v3")
    out = tmp_path / "v3.safetensors"
    assert main(["motion", str(path), str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["motion", str(out), str(tmp_path / "as_v1.safetensors"), "--version", "v1", "-q"]) == 2
    assert capsys.readouterr().err == f"error: --version v1: not used: {out} holds converted v3 motion params\n"
    assert main(["motion", str(out), str(tmp_path / "as_v3.safetensors"), "--version", "v3", "-q"]) == 0
