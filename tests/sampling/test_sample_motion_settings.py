"""What an inference config or --motion-version says about a motion module reaches the motion loader:
`use_inflated_groupnorm` / `motion_module_mid_block` decide the version (v1: joint resnet GroupNorm),
`temporal_position_encoding_max_len` the length; converted files are cached per these settings."""
import os
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from animatediff_jax import loading, sample
from animatediff_jax.params import flatten
from tests.sampling import tiny_models as tm
from tests.sampling.stop_at_load import Validated, stop_at_load


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion-settings")
    tm.write_base_folder(str(root / "base"))
    tm.write_v3_motion_module(str(root / "v3.safetensors"))  # no mid block, pe of 32 rows
    tensors = load_file(str(root / "v3.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.endswith("pos_encoder.pe")},  # as the trainer saves it
              str(root / "no_pe.safetensors"))
    for name, inflated, max_len in (("v1-like", "false", 24), ("v3-like", "true", 32)):
        (root / f"{name}.yaml").write_text(textwrap.dedent(f"""
            unet_additional_kwargs:
              use_inflated_groupnorm: {inflated}
              use_motion_module: true
              motion_module_mid_block: false
              motion_module_type: Vanilla
              motion_module_kwargs:
                num_attention_heads: 8
                num_transformer_block: 1
                temporal_position_encoding: true
                temporal_position_encoding_max_len: {max_len}
            noise_scheduler_kwargs: {{beta_start: 0.00085, beta_end: 0.012, beta_schedule: linear}}
            """))
    return root


@pytest.fixture
def jobs(files, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    loading._load_motion.cache_clear()
    return stop_at_load(monkeypatch)


def _run_config(files, inference, motion):
    (files / "cfg.yaml").write_text(textwrap.dedent(f"""
        - inference_config: "{files / inference}"
          motion_module: "{files / motion}"
          prompt: ["a cat"]
        """))
    with pytest.raises(Validated):
        sample.main([str(files / "cfg.yaml"), "--base", str(files / "base"), "--W", "32", "--H", "32", "--L", "4"])


@pytest.mark.parametrize("inference,version,norm,length", [("v1-like.yaml", "v1", "joint", 24),
                                                           ("v3-like.yaml", "v3", "frame", 32)])
def test_inference_config_decides_the_version_of_a_module_without_pe(files, jobs, tmp_path, inference, version,
                                                                     norm, length):
    _run_config(files, inference, "no_pe.safetensors")
    (job,) = jobs
    assert (job.model["motion_version"], job.model["motion_max_seq_length"]) == (version, length)
    mm = loading.load_motion(str(files / "no_pe.safetensors"), str(tmp_path / "cache"), version=version,
                             max_seq_length=length)  # the module validation loaded (kept in-process)
    assert (mm.version, mm.config.resnet_norm, mm.config.max_seq_length) == (version, norm, length)
    with_pe = loading.load_motion(str(files / "v3.safetensors"), str(tmp_path / "cache"))
    assert with_pe.version == "v3"
    for path, value in flatten(with_pe.params).items():  # same weights as the released layout
        np.testing.assert_array_equal(np.asarray(flatten(mm.params)[path]), np.asarray(value))


def test_motion_version_flag_reaches_the_loader(files, jobs, tmp_path):
    with pytest.raises(Validated):
        sample.main(["--base", str(files / "base"), "--motion-module", str(files / "v3.safetensors"),
                     "--motion-version", "v1", "--prompt", "a cat", "--W", "32", "--H", "32", "--L", "4"])
    assert jobs[0].model["motion_version"] == "v1"
    mm = loading.load_motion(str(files / "v3.safetensors"), str(tmp_path / "cache"), version="v1")
    assert (mm.version, mm.config.resnet_norm) == ("v1", "joint")


def test_the_conversion_cache_is_keyed_by_the_settings(files, tmp_path):
    cache = str(tmp_path / "cache")
    path = str(files / "v3.safetensors")
    plain = loading.load_motion(path, cache)
    loading._load_motion.cache_clear()  # from here on, only the disk cache could mix them up
    as_v1 = loading.load_motion(path, cache, version="v1", max_seq_length=24)
    again = loading.load_motion(path, cache)
    assert (plain.config.resnet_norm, as_v1.config.resnet_norm, again.config.resnet_norm) == ("frame", "joint", "frame")
    assert (as_v1.config.max_seq_length, again.config.max_seq_length) == (24, 32)
    assert len([f for f in os.listdir(os.path.join(cache, "converted")) if f.startswith("motion-")]) == 2


def test_motion_heads_and_groups_flags_reach_an_original_file(tmp_path, jobs, capsys):
    """An original-format file cannot store heads or groups (the loader assumes the released 8 and 32):
    --motion-heads / --motion-norm-groups say them, and a converted file refuses contrary ones."""
    from animatediff_jax.miniature.shipped import MINIATURE, motion_path
    from convert.__main__ import main as convert
    shipped = motion_path(MINIATURE, "B")  # 4 heads, 16 groups
    exported, cache = str(tmp_path / "mm.ckpt"), str(tmp_path / "cache")
    assert convert(["export-motion", shipped, exported]) == 0
    assert "--motion-heads 4 --motion-norm-groups 16" in capsys.readouterr().err
    with pytest.raises(Validated):
        sample.main(["--base", os.path.join(MINIATURE, "base"), "--motion-module", exported, "--motion-heads", "4",
                     "--motion-norm-groups", "16", "--prompt", "a cat", "--W", "32", "--H", "32", "--L", "4"])
    assert (jobs[0].model["motion_heads"], jobs[0].model["motion_norm_groups"]) == (4, 16)
    said = loading.load_motion(exported, cache, heads=4, norm_num_groups=16)
    assumed = loading.load_motion(exported, cache)
    original = loading.load_motion(shipped, cache)
    assert (said.config.num_attention_heads, said.config.norm_num_groups) == (4, 16)
    assert (assumed.config.num_attention_heads, assumed.config.norm_num_groups) == (8, 32)
    for path, value in flatten(original.params).items():
        np.testing.assert_array_equal(np.asarray(flatten(said.params)[path]), np.asarray(value))
    with pytest.raises(loading.LoadError, match="asked for {'heads': 8}"):
        loading.load_motion(shipped, cache, heads=8)


def _validate(files, *extra):
    with pytest.raises(Validated):
        sample.main(["--base", str(files / "base"), "--motion-module", str(files / "v3.safetensors"),
                     "--prompt", "a cat", "--W", "32", "--H", "32", "--L", "4", *extra])


def _assumed(record) -> list[str]:
    return [str(w.message) for w in record if "stores neither attention heads" in str(w.message)]


def test_an_original_format_module_says_what_was_assumed_on_every_run(files, jobs):
    for run in range(2):  # the second reads the conversion cache: the warning must not depend on converting
        loading._load_motion.cache_clear()
        with pytest.warns(UserWarning) as record:
            _validate(files)
        assert _assumed(record) == [
            f"--motion-module {files / 'v3.safetensors'}: an original-format file stores neither attention heads "
            "nor GroupNorm groups; assumed 8 attention heads and 32 GroupNorm groups (the original's defaults): if "
            "the module was trained with others, pass --motion-heads N --motion-norm-groups N"], run
    loading._load_motion.cache_clear()
    with pytest.warns(UserWarning) as record:
        _validate(files, "--motion-heads", "8")
    assert _assumed(record) == [
        f"--motion-module {files / 'v3.safetensors'}: an original-format file stores neither attention heads "
        "nor GroupNorm groups; assumed 32 GroupNorm groups (the original's default): if the module was trained "
        "with others, pass --motion-norm-groups N"]


def test_a_module_whose_heads_and_groups_are_stated_gets_no_warning(files, jobs, recwarn):
    _validate(files, "--motion-heads", "8", "--motion-norm-groups", "32")
    assert _assumed(recwarn) == []
