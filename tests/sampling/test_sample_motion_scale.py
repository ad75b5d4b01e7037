"""`--motion-scale` / `--motion-block-scales` and the prompt-config keys `motion_scale` /
`motion_block_scales`: checked before any model loads, recorded in config.yaml, which reproduces the run."""
import os
import textwrap

import numpy as np
import pytest
import yaml

from animatediff_jax import sample
from animatediff_jax.sampling.prompt_config import PromptConfigError, load_prompt_config
from tests.sampling import tiny_models as tm
from tests.sampling.test_sample_cli_values import _error, env  # noqa: F401 - the fixture

SIZE = ["--W", "32", "--H", "32", "--L", "4", "--steps", "2", "--no-progress", "--save-npy"]


@pytest.mark.parametrize("flags,rc,message", [
    (["--motion-scale", "nan"], 2, "--motion-scale: must be a finite number, got nan"),
    (["--motion-block-scales", "mid_block"], 2, "--motion-block-scales: 'mid_block': expected BLOCK=FACTOR"),
    (["--motion-block-scales", "mid_block=x"], 2, "--motion-block-scales: 'mid_block=x': factor 'x' is not a number"),
    (["--motion-block-scales", "mid_block=1,mid_block=2"], 2, "--motion-block-scales: mid_block is given twice"),
    (["--motion-block-scales", "up_blocks_9=0.5"], 2,
     "--motion-scale/--motion-block-scales (motion_scale/motion_block_scales): no block(s) ['up_blocks_9']"),
])
def test_bad_motion_scales_are_refused_before_loading(env, capsys, flags, rc, message):  # noqa: F811
    err = _error(capsys, ["--prompt", "a cat", "--W", "32", "--H", "32", "--out", "out", *flags], rc)
    assert message in err, err
    assert not env.jobs


def test_motion_scale_keys_of_a_prompt_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent("""\
        - prompt: [a cat]
          motion_scale: 1.5
          motion_block_scales: {mid_block: 0, up_blocks_1: 2}
        """))
    (entry,) = load_prompt_config(config)
    assert (entry.motion_scale, entry.motion_block_scales) == (1.5, {"mid_block": 0.0, "up_blocks_1": 2.0})
    for bad, message in (("motion_scale: .nan", "must be a finite number"),
                         ("motion_block_scales: {mid_block: yes}", "must be a block name and a number"),
                         ("motion_block_scales: [mid_block]", "must be a {block: factor} mapping")):
        config.write_text(f"- prompt: [a cat]\n  {bad}\n")
        with pytest.raises(PromptConfigError, match=message.replace("{", r"\{")):
            load_prompt_config(config)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion_scale")
    tm.write_base_folder(str(root / "base"))
    tm.write_adapter_folder(str(root / "adapter"))
    tm.write_original_motion_module(str(root / "adapter"), str(root / "mm.safetensors"))
    return root


def _videos(out):
    (run,) = os.listdir(out)
    folder = out / run
    return folder, {f: np.load(folder / "sample" / f) for f in sorted(os.listdir(folder / "sample"))
                    if f.endswith(".npy")}


def test_config_yaml_records_and_reproduces_the_motion_scale(files, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    model = ["--base", str(files / "base"), "--motion-module", str(files / "mm.safetensors"), "--prompt", "a cat",
             "--seed", "5", *SIZE]
    assert sample.main([*model, "--out", str(tmp_path / "plain")]) == 0
    assert sample.main([*model, "--motion-scale", "0.5", "--motion-block-scales", "mid_block=2,up_blocks_0=0",
                        "--out", str(tmp_path / "scaled")]) == 0
    _, plain = _videos(tmp_path / "plain")
    folder, scaled = _videos(tmp_path / "scaled")
    assert all(np.abs(scaled[n] - plain[n]).max() > 1e-3 for n in plain)  # the flags reach the UNet
    (entry,) = yaml.safe_load((folder / "config.yaml").read_text())
    assert (entry["motion_scale"], entry["motion_block_scales"]) == (0.5, {"mid_block": 2.0, "up_blocks_0": 0.0})

    assert sample.main([str(folder / "config.yaml"), "--no-progress", "--save-npy", "--out",
                        str(tmp_path / "again")]) == 0
    again_folder, again = _videos(tmp_path / "again")
    for n in scaled:
        np.testing.assert_array_equal(again[n], scaled[n])  # bit for bit
    # a flag overrides the entry's keys (and is what the new config.yaml records)
    assert sample.main([str(folder / "config.yaml"), "--motion-scale", "1", "--motion-block-scales", "mid_block=1",
                        "--no-progress", "--save-npy", "--out", str(tmp_path / "over")]) == 0
    over_folder, over = _videos(tmp_path / "over")
    for n in plain:
        np.testing.assert_array_equal(over[n], plain[n])  # scale 1: today's frames
    (entry,) = yaml.safe_load((over_folder / "config.yaml").read_text())
    assert "motion_scale" not in entry and entry["motion_block_scales"] == {"mid_block": 1.0}
