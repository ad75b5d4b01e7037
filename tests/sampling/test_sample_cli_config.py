"""`python -m animatediff_jax.sample` end to end on small random files, and its input checks."""
import os
import textwrap

import pytest
import yaml

from animatediff_jax import sample
from tests.sampling import tiny_models as tm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "models").mkdir()
    tm.write_base_folder(str(root / "models" / "base"))
    tm.write_dreambooth(str(root / "models" / "toon.safetensors"))
    tm.write_kohya_lora(str(root / "models" / "style.safetensors"))
    tm.write_adapter_folder(str(root / "adapter"))
    tm.write_original_motion_module(str(root / "adapter"), str(root / "models" / "mm_v2.safetensors"))
    tm.write_motion_lora(str(root / "models" / "mm_v2.safetensors"), str(root / "models" / "zoom.safetensors"))
    return root


def test_original_schema_config_end_to_end(files, monkeypatch, tmp_path):
    monkeypatch.chdir(files)  # relative paths resolve against the working directory, as in the original
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    cfg = tmp_path / "toon.yaml"
    cfg.write_text(textwrap.dedent("""
        - inference_config: "configs/inference/inference-v2.yaml"
          motion_module: "models/mm_v2.safetensors"
          motion_module_lora_configs:
            - path: "models/zoom.safetensors"
              alpha: 0.7
          dreambooth_path: "models/toon.safetensors"
          lora_model_path: "models/style.safetensors"
          lora_alpha: 0.8
          seed: [-1, 123]
          steps: 2
          guidance_scale: 7.5
          prompt:
            - "a girl, cherry blossoms"
            - "a boy, marble"
          n_prompt:
            - "worst quality"
        """))
    out = tmp_path / "out"
    argv = [str(cfg), "--base", "models/base", "--out", str(out), "--W", "32", "--H", "32", "--L", "4",
            "--no-progress"]
    assert sample.main(argv) == 0
    (run,) = os.listdir(out)
    files_written = sorted(os.listdir(out / run / "sample"))
    assert files_written == ["0-a-girl-cherry-blossoms.gif", "0-a-girl-cherry-blossoms.mp4",
                             "1-a-boy-marble.gif", "1-a-boy-marble.mp4"]
    assert (out / run / "sample.gif").stat().st_size > 0
    resolved = yaml.safe_load((out / run / "config.yaml").read_text())
    seeds = resolved[0]["random_seed"]
    assert len(seeds) == 2 and seeds[1] == 123 and seeds[0] >= 0
    models = os.path.realpath(files / "models")  # files recorded absolute; the original's inference config by name
    assert resolved[0]["dreambooth_path"] == os.path.join(models, "toon.safetensors")
    assert resolved[0]["motion_module_lora_configs"] == [{"path": os.path.join(models, "zoom.safetensors"), "alpha": 0.7}]
    assert resolved[0]["inference_config"] == "configs/inference/inference-v2.yaml"
    # a second run never touches the first one's folder
    assert sample.main(argv) == 0
    assert len(os.listdir(out)) == 2


@pytest.mark.parametrize("extra,message", [
    (["--width", "36"], "multiples of 8"),
    (["--frames", "40"], "exceed the motion module's position encoding (16 frames)"),
    (["--frames", "40", "--context-length", "24"], "--context-length (context_length): 24 exceeds the motion "
                                                    "module's position encoding (16 frames)"),
    (["--dreambooth", "missing.safetensors"], "--dreambooth missing.safetensors: not found"),  # a file: exit 1
    (["--lora", "models/style.safetensors:strong"], "scale 'strong' is not a number"),
    (["--seed", "1", "--seed", "2", "--seed", "3"], "--seed: 3 given for 1 prompts"),
    (["--decode-chunk", "0"], "--decode-chunk: must be ≥ 1, got 0"),
])
def test_bad_input_fails_before_loading(files, monkeypatch, tmp_path, capsys, extra, message):
    monkeypatch.chdir(files)
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    argv = ["--base", "models/base", "--motion-module", "adapter", "--prompt", "a cat", "--out",
            str(tmp_path / "out")] + extra
    assert sample.main(argv) == (1 if "not found" in message else 2)
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_motion_module_of_another_family_is_refused(files, monkeypatch, tmp_path, capsys):
    from diffusers import MotionAdapter
    MotionAdapter(**{**tm.ADAPTER, "block_out_channels": (16, 32)}).save_pretrained(str(tmp_path / "other"))
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    rc = sample.main(["--base", str(files / "models" / "base"), "--motion-module", str(tmp_path / "other"),
                      "--prompt", "x", "--out", str(tmp_path / "out")])
    assert rc != 0 and "another model family" in capsys.readouterr().err



def test_prompt_map_config_end_to_end(files, monkeypatch, tmp_path, capsys):
    import numpy as np
    monkeypatch.chdir(files)
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    cfg = tmp_path / "travel.yaml"
    cfg.write_text(textwrap.dedent("""
        - motion_module: "models/mm_v2.safetensors"
          seed: 5
          steps: 2
          prompt: ["a cat"]
          prompt_map:
            - {0: "a cat", 3: "a cat"}
            - {"0": "a cat", "3": "fireworks at night"}
        """))
    out = tmp_path / "out"
    argv = [str(cfg), "--base", "models/base", "--out", str(out), "--W", "32", "--H", "32", "--L", "4",
            "--no-progress", "--save-npy"]
    assert sample.main(argv) == 0
    (run,) = os.listdir(out)
    npys = sorted(f for f in os.listdir(out / run / "sample") if f.endswith(".npy"))
    assert npys == ["0-a-cat.npy", "1-a-cat-a-cat.npy", "2-a-cat-fireworks-at-night.npy"]
    plain, same, moved = (np.load(out / run / "sample" / f) for f in npys)
    np.testing.assert_allclose(same, plain, atol=1e-6)  # one prompt at every key frame: no travel
    change = np.abs(moved - plain).max(axis=(1, 2, 3))   # per frame; the tiny random CLIP moves little
    assert change[-1] > 1e-5 and change[-1] > 10 * change[0]  # the last key frame's prompt, not the first's
    resolved = yaml.safe_load((out / run / "config.yaml").read_text())
    assert resolved[0]["prompt_map"][1] == {"0": "a cat", "3": "fireworks at night"}
    # a key frame beyond the video fails before any model is loaded
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    assert sample.main(argv[:-4] + ["--L", "3", "--no-progress"]) != 0
    assert "prompt travel frame 3 is outside the video's 3 frames" in capsys.readouterr().err
