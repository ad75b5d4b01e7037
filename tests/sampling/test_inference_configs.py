"""configs/inference/v{1,2,3}.yaml read into the code-defined motion configs; bad values refused."""
import copy
from pathlib import Path

import pytest
import yaml

from animatediff_jax.models.configs import MOTION_VERSIONS
from animatediff_jax.sampling.inference_config import motion_config_from_inference_yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_yaml_equals_code_config(version):
    motion, scheduler = motion_config_from_inference_yaml(ROOT / f"configs/inference/{version}.yaml")
    assert motion == MOTION_VERSIONS[version]
    assert scheduler == dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                             steps_offset=1, clip_sample=False)


def _v2():
    return yaml.safe_load((ROOT / "configs/inference/v2.yaml").read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["unet_additional_kwargs"].update(unet_use_cross_frame_attention=True), "cross_frame"),
    (lambda c: c["unet_additional_kwargs"].update(motion_module_type="Conv"), "motion_module_type"),
    (lambda c: c["unet_additional_kwargs"].update(motion_module_resolutions=[1, 2]), "resolutions"),
    (lambda c: c["unet_additional_kwargs"]["motion_module_kwargs"].update(temporal_attention_dim_div=2), "dim_div"),
    (lambda c: c["unet_additional_kwargs"]["motion_module_kwargs"].update(
        attention_block_types=["Temporal_Self"]), "attention_block_types"),
    (lambda c: c["unet_additional_kwargs"]["motion_module_kwargs"].update(num_heads=8), "unknown keys"),
    (lambda c: c["noise_scheduler_kwargs"].update(beta_shedule="linear"), "unknown keys"),
    (lambda c: c.update(model="x"), "unknown top-level"),
])
def test_unsupported_values_are_refused(edit, message):
    cfg = copy.deepcopy(_v2())
    edit(cfg)
    with pytest.raises(ValueError, match=message):
        motion_config_from_inference_yaml(cfg)


def test_error_names_the_file(tmp_path):
    cfg = _v2()
    cfg["unet_additional_kwargs"]["motion_module_decoder_only"] = True
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="bad.yaml.*motion_module_decoder_only"):
        motion_config_from_inference_yaml(path)


def test_no_motion_module_gives_none():
    cfg = _v2()
    cfg["unet_additional_kwargs"]["use_motion_module"] = False
    assert motion_config_from_inference_yaml(cfg)[0] is None
