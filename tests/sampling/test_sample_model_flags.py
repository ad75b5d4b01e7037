"""Model flags without --base build on the whole shipped miniature, its motion module included (a user's
`--lora ... --prompt ...` silently sampled frame-wise images), and every job says what it samples with."""
import pytest

from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from animatediff_jax.sample import describe_models, jobs_from_args, main
from animatediff_jax.sample_flags import build_parser

LORA = f"{MINIATURE}/lora_checker.safetensors"


def jobs(*argv):
    return jobs_from_args(build_parser().parse_args(list(argv)), list(argv))[0]


@pytest.mark.parametrize("flags", [["--lora", LORA], ["--dreambooth", f"{MINIATURE}/dreambooth"], []])
def test_model_flags_keep_the_miniature_motion_module(flags):
    (job,) = jobs(*flags, "--prompt", "a red circle moving right")
    assert job.model["motion_module"] == motion_path(MINIATURE, "B")
    assert "motion module" in describe_models(job.model) and "no motion module" not in describe_models(job.model)


def test_motion_module_none_samples_frame_wise_and_says_so():
    (job,) = jobs("--motion-module", "none", "--lora", LORA, "--prompt", "a red circle")
    assert job.model["motion_module"] is None
    text = describe_models(job.model)
    assert text.startswith("base ") and text.endswith("lora_checker.safetensors x1")
    assert ", no motion module (each frame an independent image), LoRA " in text


def test_an_explicit_base_has_no_default_module(tmp_path):
    (job,) = jobs("--base", str(tmp_path), "--prompt", "a cat")
    assert job.model["motion_module"] is None


def test_motion_lora_without_a_module_fails_before_loading(capsys, tmp_path):
    rc = main(["--motion-module", "none", "--motion-lora", LORA, "--prompt", "a", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "error: --motion-lora: needs a motion module (--motion-module)"
    assert not (tmp_path / "o").exists()

