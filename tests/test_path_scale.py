"""`PATH[:SCALE]` values split by one rule in every CLI (`animatediff_jax.path_scale`): sample's
`--lora`/`--motion-lora`, convert's `--lora` (checked at parse time, read with the file)."""
import argparse

import pytest

from animatediff_jax.path_scale import split_path_scale
from animatediff_jax.sample_flags import _path_scale
from animatediff_jax.scale_limits import LORA
from convert.commands_motion import lora_value
from convert.lora import parse_path_scale

sample_value = _path_scale(LORA)  # sample's argparse type of --lora


def test_an_existing_path_with_a_colon_is_a_path(tmp_path):
    (tmp_path / "style:0.5.safetensors").write_bytes(b"")
    (tmp_path / "a:b").mkdir()
    for value in (str(tmp_path / "style:0.5.safetensors"), str(tmp_path / "a:b")):
        assert split_path_scale(value) == (value, None)
        assert sample_value(value) == (value, 1.0) == parse_path_scale(value)
        assert lora_value(value) == value


@pytest.mark.parametrize("value, path, scale", [("x.safetensors:0.75", "x.safetensors", 0.75),
                                                ("x.safetensors", "x.safetensors", 1.0),
                                                ("dir/a:b:-1", "dir/a:b", -1.0)])
def test_sample_and_convert_split_alike(value, path, scale):
    assert sample_value(value) == (path, scale) == parse_path_scale(value)
    assert lora_value(value) == value


@pytest.mark.parametrize("value", ["", ":0.5"])
def test_an_empty_path_is_refused_by_both(value):
    for parse in (sample_value, lora_value):
        with pytest.raises(argparse.ArgumentTypeError, match="empty path"):
            parse(value)


@pytest.mark.parametrize("value", ["x.safetensors:1e30", "x.safetensors:-101"])
def test_a_scale_out_of_range_is_refused_by_both(value):
    for parse in (sample_value, lora_value):
        with pytest.raises(argparse.ArgumentTypeError, match=r"scale must be in \[-100, 100\]"):
            parse(value)
