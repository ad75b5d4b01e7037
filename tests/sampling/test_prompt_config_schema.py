"""Prompt configs in the original AnimateDiff schema: parsing, broadcasting, clear errors."""
import textwrap

import pytest

from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.sampling.prompt_config import (PromptConfigError, draw_seeds, inference_config,
                                           load_prompt_config, resolved_config)


def _write(tmp_path, text, files=("mm.ckpt", "db.safetensors", "lora.safetensors", "ml.ckpt")):
    for f in files:
        (tmp_path / f).write_bytes(b"x")
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_original_schema_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, """
        # v2 + MotionLoRA, as the original writes it
        - inference_config: "configs/inference/inference-v2.yaml"
          motion_module:    "mm.ckpt"
          motion_module_lora_configs:
            - path:  "ml.ckpt"
              alpha: 0.5
          dreambooth_path: "db.safetensors"
          lora_model_path: "lora.safetensors"
          lora_alpha: 0.6
          seed: [10788741199826055526, -1]
          steps: 4
          guidance_scale: 8
          W: 64
          prompt:
            - "a cat"
            - "a dog"
          n_prompt:
            - "worst quality"
        """)
    (e,) = load_prompt_config(p)
    assert e.prompts == ["a cat", "a dog"] and e.n_prompts == ["worst quality"] * 2
    assert e.seeds == [10788741199826055526, -1] and e.steps == 4 and e.guidance_scale == 8.0
    assert e.motion_module == str(tmp_path / "mm.ckpt")
    assert e.motion_module_lora_configs == [(str(tmp_path / "ml.ckpt"), 0.5)]
    assert e.dreambooth_path == str(tmp_path / "db.safetensors")
    assert e.loras == [(str(tmp_path / "lora.safetensors"), 0.6)] and e.lora_alpha_rule == "original"
    assert e.W == 64 and e.H is None
    # the original's inference config name maps to this project's file or the built-in settings
    assert e.inference_config.endswith("v2.yaml") or e.inference_config == "builtin:inference-v2"
    assert inference_config(e.inference_config)[1]["beta_schedule"] == "linear"
    seeds = draw_seeds(e.seeds)
    assert seeds[0] == 10788741199826055526 and seeds[1] >= 0
    (out,) = resolved_config([(e, seeds)])
    assert out["random_seed"] == seeds and out["prompt"] == ["a cat", "a dog"]


def test_first_release_mapping_with_module_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")
    (tmp_path / "mm2.ckpt").write_bytes(b"x")
    p = _write(tmp_path, """
        ToonYou:
          motion_module: ["mm.ckpt", "mm2.ckpt"]
          seed: 7
          prompt: ["a", "b", "c"]
          n_prompt: [""]
        """)
    es = load_prompt_config(p)  # relative to the config's folder when not found from the cwd
    assert [e.motion_module for e in es] == [str(tmp_path / "mm.ckpt"), str(tmp_path / "mm2.ckpt")]
    assert es[0].seeds == [7, 7, 7] and es[0].loras == [] and es[0].dreambooth_path is None


@pytest.mark.parametrize("body,match", [
    ('- prompt: ["a"]\n  sed: 3\n', r"entry 0: unknown keys \['sed'\] \('sed': did you mean 'seed'\?\); known keys: "
                                    r"\[.*'controlnet_images', .*'seed'"),  # the SparseCtrl keys listed too
    ('- prompt: ["a"]\n  controlnet_imges: [a.png]\n  zzz: 1\n',
     r"unknown keys \['controlnet_imges', 'zzz'\] \('controlnet_imges': did you mean 'controlnet_images'\?\)"),
    ('motion_module: mm.ckpt\nprompt: ["a"]\n', r"the top level holds an entry's keys \(motion_module, prompt\), not "
                                              r"entries: indent them under an entry name"),
    ('- prompt: ["a"]\n  steps: "25"\n', r"entry 0: key 'steps' must be an integer"),
    ('- prompt: ["a"]\n  guidance_scale: yes\n', r"key 'guidance_scale' must be a number"),
    ('- prompt: ["a", "b"]\n  n_prompt: ["x", "y", "z"]\n', r"3 n_prompt for 2 prompts"),
    ('- prompt: ["a", "b"]\n  seed: [1, 2, 3]\n', r"3 seeds for 2 prompts"),
    ('- prompt: ["a"]\n  W: 100\n', r"'W' must be a multiple of 8"),
    ('- prompt: ["a"]\n  H: 1000000\n', r"'H' must be ≤ 8192, got 1000000"),  # as --height (was: out of memory)
    ('- prompt: ["a"]\n  controlnet_path: "x"\n', r"entry 0: missing key 'controlnet_images' \(the condition images "),
    ('- prompt: ["a"]\n  controlnet_path: "x"\n  controlnet_images: []\n',
     r"key 'controlnet_images' must be a non-empty list of image paths, got \[\]"),
    ('- prompt: ["a"]\n  controlnet_path: "x"\n  controlnet_images: [a.png]\n  controlnet_image_indexs: [0, 5]\n',
     r"2 controlnet_image_indexs but 1 controlnet_images"),
    ('- prompt: ["a"]\n  controlnets: [{path: "cn"}]\n', r"controlnets\[0\] must be \{path, video, "),
    ('- prompt: ["a"]\n  controlnets: [{path: "cn", video: "v", conditioning_scale: .nan}]\n',
     r"controlnets\[0\].conditioning_scale must be a finite number"),
    ('- prompt: ["a"]\n  lora_model_path: "lora.safetensors"\n  lora_alpha: [1, 2]\n', r"2 lora_alpha for 1 LoRAs"),
    ('- prompt: ["a"]\n  lora_alpha_rule: "a1111"\n', r"key 'lora_alpha_rule' must be one of \['kohya', 'original'\]"),
    ('- prompt: ["a"]\n  guidance_scale: .nan\n', r"key 'guidance_scale' must be a finite number, got nan"),
    ('- prompt: ["a"]\n  lora_model_path: "lora.safetensors"\n  lora_alpha: [.inf]\n',
     r"lora_alpha\[0\] must be a finite number, got inf"),
    ('- prompt: ["a"]\n  motion_module_lora_configs: [{path: "ml.ckpt", alpha: -.inf}]\n',
     r"motion_module_lora_configs\[0\].alpha must be a finite number, got -inf"),
    ('- prompt: ["a", "b"]\n  random_seed: [1]\n', r"random_seed records 1 seeds for 2 prompts"),
    ('- prompt: ["a"]\n  random_seed: [-1]\n', r"random_seed\[0\] must be an integer in \[0, 18446744073709551615\]"),
    ('- prompt: ["a"]\n  motion_module_lora_configs: [{path: "ml.ckpt", alpha: "high"}]\n', r"alpha must be a number"),
    ('- steps: 3\n', r"missing key 'prompt' \(or 'prompt_map'\)"),
    ('- prompt: [1]\n', r"prompt\[0\] must be a string"),
    ('- prompt: ["a"]\n  seed: -5\n', r"seed\[0\] must be -1"),
    ('- prompt_map: {0: "a", 4: 5}\n', r"prompt_map: the prompt for frame 4 must be a string, got int 5"),
    ('- prompt_map: {first: "a"}\n', r"prompt_map: key 'first' is not a frame number"),
    ('- prompt_map: {-1: "a"}\n', r"prompt_map: frame -1 is negative"),
    ('- prompt_map: ["a", "b"]\n', r"prompt_map\[0\] must be a \{frame: prompt\} mapping, got str"),
    ('- prompt_map: "0: a"\n', r"key 'prompt_map' must be a \{frame: prompt\} mapping or a list"),
    ('- prompt_map: {0: "a", "0": "b"}\n', r"frame 0 is given twice"),
    ('- prompt_map: {}\n', r"prompt_map is empty"),
    ('- prompt: ["a"]\n  motion_module: []\n', r"key 'motion_module' is an empty list \(no video would be sampled\)"),
    ('- prompt: ["a"]\n  motion_module: ""\n', r"key 'motion_module' is an empty path"),
    ('- prompt: ["a"]\n  motion_module: [mm.ckpt, " "]\n', r"motion_module\[1\] is an empty path"),
    ('- prompt: ["a"]\n  motion_module: [5]\n', r"key 'motion_module' must be a path, got 5"),
])
def test_bad_configs_name_file_entry_and_key(tmp_path, monkeypatch, body, match):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, body)
    with pytest.raises(PromptConfigError, match=match) as e:
        load_prompt_config(p)
    assert str(p) in str(e.value) and isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_missing_file_named_by_a_key_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, '- prompt: ["a"]\n  dreambooth_path: "missing.safetensors"\n')
    match = r"entry 0: key 'dreambooth_path': DreamBooth checkpoint 'missing.safetensors' not found"
    with pytest.raises(InputError, match=match) as e:
        load_prompt_config(p)
    assert str(e.value).startswith(str(p)) and e.value.exit_code == 1


@pytest.mark.parametrize("name,found", [("inference.yaml", "v1"), ("inference-v1.yaml", "v1"),
                                        ("inference-v3.yaml", "v3"), ("inference-v9.yaml", None),
                                        ("inference-v2-typo.yaml", None)])
def test_only_the_originals_inference_configs_have_stand_ins(tmp_path, monkeypatch, name, found):
    """A stranger's typo `inference-v9.yaml` was silently given the built-in settings: only the names the
    original project has (its first release's inference.yaml, inference-v1/v2/v3.yaml) stand for them."""
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, f'- prompt: ["a"]\n  inference_config: "configs/inference/{name}"\n')
    if found is None:
        with pytest.raises(InputError, match=rf"key 'inference_config': inference config 'configs/inference/{name}' "
                                             "not found"):
            load_prompt_config(p)
    else:
        (e,) = load_prompt_config(p)
        assert e.inference_config.endswith(f"inference/{found}.yaml") or e.inference_config == f"builtin:inference-{found}"


def test_prompt_map_travel_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, """
        - prompt: ["a cat"]
          prompt_map: {0: "a cat, spring", 12: "a cat, winter"}
          seed: [1, 2]
        - prompt_map:                  # a list: one travelling video each; keys as prompt-travel's JSON writes them
            - {"0": "sunrise", "8": "noon", "15": "night"}
            - {3: "rain"}
          n_prompt: ["blurry"]
          seed: 4
        """)
    a, b = load_prompt_config(p)
    assert a.prompts == ["a cat", {0: "a cat, spring", 12: "a cat, winter"}] and a.seeds == [1, 2]
    assert b.prompts == [{0: "sunrise", 8: "noon", 15: "night"}, {3: "rain"}]
    assert b.n_prompts == ["blurry", "blurry"] and b.seeds == [4, 4]
    from animatediff_jax.sampling.prompt_config import check_prompt_frames
    check_prompt_frames(b, 16, str(p))
    with pytest.raises(PromptConfigError, match="entry 1: prompt travel frame 15 is outside the video's 12 frames"):
        check_prompt_frames(b, 12, str(p))
    assert resolved_config([(a, [1, 2])])[0]["prompt_map"] == {0: "a cat, spring", 12: "a cat, winter"}


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(InputError, match="nope.yaml: prompt config not found"):
        load_prompt_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("- prompt: [a\n")
    with pytest.raises(InputError, match="bad.yaml: prompt config is not valid YAML"):
        load_prompt_config(tmp_path / "bad.yaml")
    (tmp_path / "latin1.yaml").write_bytes('- prompt: ["caf\xe9"]\n'.encode("latin-1"))
    with pytest.raises(InputError, match="latin1.yaml: prompt config is not UTF-8 text"):
        load_prompt_config(tmp_path / "latin1.yaml")
    (tmp_path / "inference.yaml").write_text("noise_scheduler_kwargs: [1\n")
    with pytest.raises(InputError, match="inference.yaml: inference config is not valid YAML"):
        inference_config(str(tmp_path / "inference.yaml"))


@pytest.mark.parametrize("name", ["v2-realistic-vision.yaml", "v3-domain-adapter.yaml", "prompt-travel.yaml",
                                  "first-release-tusun.yaml"])
def test_example_configs_follow_the_schema(name, tmp_path, monkeypatch):
    """The shipped examples are valid; only their (not shipped) weight files are missing."""
    from animatediff_jax.sampling.prompt_config import PROJECT_CONFIGS
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="not found") as e:
        load_prompt_config(PROJECT_CONFIGS / "prompts" / name)
    assert "unknown keys" not in str(e.value) and "must be" not in str(e.value)


def test_several_loras_and_the_alpha_rule(tmp_path, monkeypatch):
    """Beyond the original: a list of LoRAs (one lora_alpha broadcasts, or one each) and `lora_alpha_rule`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.safetensors").write_bytes(b"x")
    p = _write(tmp_path, """
        - prompt: ["a"]
          lora_model_path: ["lora.safetensors", "b.safetensors"]
          lora_alpha: 0.7
        - prompt: ["a"]
          lora_model_path: ["lora.safetensors", "b.safetensors"]
          lora_alpha: [0.5, -1]
          lora_alpha_rule: kohya
        - prompt: ["a"]
          lora_model_path: "lora.safetensors"
        """)
    a, b, c = load_prompt_config(p)
    la, lb = str(tmp_path / "lora.safetensors"), str(tmp_path / "b.safetensors")
    assert a.loras == [(la, 0.7), (lb, 0.7)] and a.lora_alpha_rule == "original"
    assert b.loras == [(la, 0.5), (lb, -1.0)] and b.lora_alpha_rule == "kohya"
    assert c.loras == [(la, 0.8)]  # the original's default lora_alpha


def test_sparsectrl_images_beyond_the_indexes_are_named_as_unused(tmp_path, monkeypatch):
    """The original reads the first image of each index and drops the rest silently: a config that lists
    more images than indexes runs as there, with a warning naming what is not used (a stranger's finding)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sparse").mkdir()
    for name in "abc":
        (tmp_path / f"{name}.png").write_bytes(b"x")
    p = _write(tmp_path, '- prompt: ["a"]\n  controlnet_path: sparse\n  controlnet_images: [a.png, b.png, c.png]\n'
                         '  controlnet_image_indexs: [0]\n')
    with pytest.warns(UserWarning, match=r"entry 0: 3 controlnet_images for 1 controlnet_image_indexs: the last 2 "
                                         r"are not used"):
        entry, = load_prompt_config(p)
    assert entry.sparsectrl["images"] == [str(tmp_path / "a.png")]


def test_sparsectrl_keys_without_an_encoder_are_named_as_ignored(tmp_path, monkeypatch):
    """The original reads no SparseCtrl key without `controlnet_path`: such a config runs as there
    (without control), with a warning naming the keys it ignores (a stranger's finding: silent)."""
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, '- prompt: ["a"]\n  controlnet_images: [missing.png]\n  controlnet_image_indexs: [0, 40]\n')
    with pytest.warns(UserWarning) as caught:
        entry, = load_prompt_config(p)
    assert [str(w.message) for w in caught] == [
        f"{p}: entry 0: controlnet_images, controlnet_image_indexs ignored: no 'controlnet_path' (SparseCtrl encoder) "
        "is given, so the video is sampled without control, as the original does"]
    assert entry.sparsectrl is None
