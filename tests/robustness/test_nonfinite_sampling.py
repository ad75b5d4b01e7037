"""The sampler refuses weights holding NaN/Inf before sampling, naming the file and the tensors (a user's
Flax motion module with one NaN sampled a NaN video, and the error then blamed an overflow)."""
import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.sample import main


def poisoned(src: str, dst: str, value: float = np.nan) -> str:
    """A copy of the safetensors file `src` at `dst` whose first floating tensor's first value is `value`;
    returns that tensor's name."""
    with safe_open(src, "np") as f:
        metadata = f.metadata()
    tensors = load_file(src)
    name = sorted(k for k, v in tensors.items() if np.issubdtype(v.dtype, np.floating))[0]
    t = tensors[name].copy()
    t.flat[0] = value
    tensors[name] = t
    save_file(tensors, dst, metadata=metadata)
    return name


def sample(tmp_path, capsys, *flags):
    rc = main([*flags, "--prompt", "a red circle", "--steps", "1", "--frames", "2", "--out", str(tmp_path / "out"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def test_nan_in_a_motion_module(tmp_path, capsys):
    bad = str(tmp_path / "mm.safetensors")
    name = poisoned(f"{MINIATURE}/motion_module_B.safetensors", bad)
    rc, err = sample(tmp_path, capsys, "--motion-module", bad)
    assert rc == 1
    assert err.startswith(f"error: --motion-module {bad}: 1 tensor holds NaN/Inf: ")
    assert name.replace(".", "/").split("/")[-1] in err and "(NaN)" in err and "would come out NaN" in err
    assert not any((tmp_path / "out").glob("sample-*"))


def test_inf_in_the_base_unet(tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(f"{MINIATURE}/base", base)
    poisoned(f"{MINIATURE}/base/unet.safetensors", str(base / "unet.safetensors"), np.inf)
    rc, err = sample(tmp_path, capsys, "--base", str(base), "--motion-module", f"{MINIATURE}/motion_module_B.safetensors")
    assert rc == 1 and err.startswith(f"error: --base {base} (unet): 1 tensor holds NaN/Inf: ") and "(Inf)" in err


def test_nan_in_a_lora_is_named_with_its_scale(tmp_path, capsys):
    bad = str(tmp_path / "lora.safetensors")
    poisoned(f"{MINIATURE}/lora_checker.safetensors", bad)
    rc, err = sample(tmp_path, capsys, "--lora", f"{bad}:0.5")
    assert rc == 1
    assert err.startswith(f"error: --lora {bad}:0.5 (fused into the ") and "NaN/Inf" in err


@pytest.mark.parametrize("flags", [[], ["--lora", f"{MINIATURE}/lora_checker.safetensors:0.8"]])
def test_finite_weights_pass(tmp_path, capsys, flags):
    rc, err = sample(tmp_path, capsys, *flags)
    assert rc == 0, err


def test_a_motion_module_whose_config_cannot_be_is_refused(tmp_path, capsys):
    """A Flax motion module whose metadata config lies (7 heads for 32 channels) was accepted by every
    check and then failed inside the network with a traceback."""
    import json
    src = f"{MINIATURE}/motion_module_B.safetensors"
    with safe_open(src, "np") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    metadata["config"] = json.dumps({**config, "num_attention_heads": 7})
    bad = str(tmp_path / "lie.safetensors")
    save_file(load_file(src), bad, metadata=metadata)
    rc, err = sample(tmp_path, capsys, "--motion-module", bad)
    assert rc == 1 and err.startswith(f"error: --motion-module {bad}: its config (num_attention_heads=7, ")


def test_a_refused_base_is_refused_before_the_run_folder(tmp_path, capsys):
    """The first job's weights are read and checked before 'sampling into OUT/' and the run folder: the line
    promised a run that the NaN refusal then stopped."""
    base = tmp_path / "base"
    shutil.copytree(f"{MINIATURE}/base", base)
    poisoned(f"{MINIATURE}/base/unet.safetensors", str(base / "unet.safetensors"))
    rc = main(["--base", str(base), "--prompt", "a red circle", "--steps", "1", "--frames", "2", "--out",
               str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and err.startswith(f"error: --base {base} (unet): 1 tensor holds NaN/Inf: ") and "(NaN)" in err
    assert err.count("\n") == 1 and "sampling into" not in out, (out, err)


def test_refused_controls_are_refused_before_the_run_folder(tmp_path, capsys, monkeypatch):
    """The first job's ControlNets are loaded (and refused) with its pipeline, before the run folder."""
    from animatediff_jax import sample
    from animatediff_jax.loading import LoadError
    from tests.sampling.test_sample_run_folder import StandInPipeline

    def refuse(*a, **k):
        raise LoadError("--controlnet cn: 1 tensor holds NaN/Inf")
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())
    monkeypatch.setattr(sample, "load_controls", refuse)
    rc = main(["--prompt", "a red circle", "--steps", "1", "--frames", "2", "--out", str(tmp_path / "out"),
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and err == "error: --controlnet cn: 1 tensor holds NaN/Inf\n" and "sampling into" not in out


def test_a_refused_config_file_is_named_by_the_config_entry_and_key(tmp_path, capsys):
    """The NaN refusal at load time names a prompt config's DreamBooth as the entry wrote it (was --dreambooth)."""
    db = tmp_path / "db"
    shutil.copytree(f"{MINIATURE}/dreambooth", db)
    poisoned(f"{MINIATURE}/dreambooth/unet.safetensors", str(db / "unet.safetensors"))
    config = tmp_path / "c.yaml"
    config.write_text(f"- prompt: [a red circle]\n  dreambooth_path: {db}\n"
                      f"  motion_module: {MINIATURE}/motion_module_B.safetensors\n")
    rc = main([str(config), "--base", f"{MINIATURE}/base", "--steps", "1", "--L", "2", "--out", str(tmp_path / "out"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith(f"error: {config}: entry 0: dreambooth_path {db} (unet): 1 tensor holds NaN/Inf"), err
