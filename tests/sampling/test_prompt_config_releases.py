"""Prompt configs of every release of the original AnimateDiff (guoyww/AnimateDiff), in their real layouts,
read with the meaning the original's `scripts/animate.py` gives them: which files, which alpha, which seeds.

The configs below are small copies of the original files' structure (first release 2023-07:
`configs/prompts/1-ToonYou.yaml`, `6-Tusun.yaml`; v2 2023-09: `v2/5-RealisticVision-MotionLoRA.yaml`;
v3 2023-12: `v3/v3-1-T2V.yaml`, `3_sparsectrl/*`; saved `config.yaml` with `random_seed`), pointing at tiny
random-weight files in the real formats (LDM single files, a kohya LoRA, `.ckpt` motion modules).
"""
import dataclasses
import textwrap

import numpy as np
import pytest
import torch

from animatediff_jax import sample
from animatediff_jax.errors import InputError
from animatediff_jax.sampling.prompt_config import PromptConfigError, draw_seeds, load_prompt_config
from tests.sampling import tiny_models as tm

TOONYOU_SEEDS = [10788741199826055526, 6520604954829636163, 6519455744612555650, 16372571278361863751]
LORA_RANK = 8  # tm.write_kohya_lora writes alpha 1: alpha != rank, so the two LoRA rules differ 8x


def _ckpt(safetensors_path: str, ckpt_path) -> None:
    """A `.safetensors` state dict re-saved as the torch pickle the original ships (`mm_sd_v15.ckpt`)."""
    from safetensors.torch import load_file
    torch.save(load_file(safetensors_path), str(ckpt_path))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The original's folder layout: models/{StableDiffusion,DreamBooth_LoRA,Motion_Module,MotionLoRA}."""
    root = tmp_path_factory.mktemp("animatediff")
    m = root / "models"
    for d in ("DreamBooth_LoRA", "Motion_Module", "MotionLoRA"):
        (m / d).mkdir(parents=True)
    tm.write_base_folder(str(m / "StableDiffusion" / "stable-diffusion-v1-5"))
    tm.write_dreambooth(str(m / "DreamBooth_LoRA" / "toonyou_beta3.safetensors"), seed=10)
    tm.write_dreambooth(str(m / "DreamBooth_LoRA" / "moonfilm_reality20.safetensors"), seed=11)
    tm.write_kohya_lora(str(m / "DreamBooth_LoRA" / "TUSUN.safetensors"), rank=LORA_RANK)
    tm.write_adapter_folder(str(root / "adapter"))
    tm.write_original_motion_module(str(root / "adapter"), str(root / "mm.safetensors"))
    for name in ("mm_sd_v14.ckpt", "mm_sd_v15.ckpt", "mm_sd_v15_v2.ckpt"):
        _ckpt(str(root / "mm.safetensors"), m / "Motion_Module" / name)
    tm.write_motion_lora(str(root / "mm.safetensors"), str(root / "zoom.safetensors"))
    _ckpt(str(root / "zoom.safetensors"), m / "MotionLoRA" / "v2_lora_ZoomIn.ckpt")
    tm.write_v3_motion_module(str(root / "v3.safetensors"))
    _ckpt(str(root / "v3.safetensors"), m / "Motion_Module" / "v3_sd15_mm.ckpt")
    torch.save({k: torch.from_numpy(v) for k, v in tm.domain_adapter_state_dict().items()},
               str(m / "Motion_Module" / "v3_sd15_adapter.ckpt"))
    (root / "configs" / "prompts").mkdir(parents=True)
    return root


def _config(repo, name: str, text: str):
    p = repo / "configs" / "prompts" / name
    p.write_text(textwrap.dedent(text))
    return p


def _jobs(config, *flags):
    return _jobs_of([str(config), "--base", "models/StableDiffusion/stable-diffusion-v1-5", *flags])


def _jobs_of(argv: list[str]):
    return sample.jobs_from_args(sample.build_parser().parse_args(argv), argv)[0]


def _abs(repo, rel: str) -> str:
    return str((repo / rel).resolve())


# ----------------------------------------------------------------------------- first release (2023-07)

def test_first_release_dreambooth_path_and_module_list(repo, monkeypatch):
    """ToonYou: `path` a DreamBooth file, `base: ""`, two motion modules -> two runs of all four prompts."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "1-ToonYou.yaml", f"""
        ToonYou:
          base: ""
          path: "models/DreamBooth_LoRA/toonyou_beta3.safetensors"
          motion_module:
            - "models/Motion_Module/mm_sd_v14.ckpt"
            - "models/Motion_Module/mm_sd_v15.ckpt"

          seed:           {TOONYOU_SEEDS}
          steps:          25
          guidance_scale: 7.5

          prompt:
            - "best quality, masterpiece, 1girl, looking at viewer, blurry background, upper body, contemporary, dress"
            - "masterpiece, best quality, 1girl, solo, cherry blossoms, hanami, pink flower, white flower"
            - "best quality, masterpiece, 1boy, formal, abstract, looking at viewer, masculine, marble pattern"
            - "best quality, masterpiece, 1girl, cloudy sky, dandelion, contrapposto, alternate hairstyle,"

          n_prompt:
            - ""
            - "badhandv4,easynegative,ng_deepnegative_v1_75t,verybadimagenegative_v1.3, bad-artist, teeth"
            - ""
            - ""
        """)
    v14, v15 = load_prompt_config(cfg)
    db = _abs(repo, "models/DreamBooth_LoRA/toonyou_beta3.safetensors")
    for e, mm in ((v14, "mm_sd_v14.ckpt"), (v15, "mm_sd_v15.ckpt")):
        assert e.motion_module == _abs(repo, f"models/Motion_Module/{mm}")
        assert e.dreambooth_path == db and e.loras == []
        assert e.seeds == TOONYOU_SEEDS and len(e.prompts) == 4 and e.n_prompts[1].startswith("badhandv4")
        assert (e.steps, e.guidance_scale, e.W, e.H, e.L) == (25, 7.5, None, None, None)
    # the job: W/H/L come from the command line in this release (the original's --W/--H/--L, default 512/16)
    jobs = _jobs(cfg, "--W", "64", "--H", "32")
    assert [j.model["motion_module"] for j in jobs] == [v14.motion_module, v15.motion_module]
    assert all(j.model["dreambooth"] == db and j.model["loras"] == [] for j in jobs)
    assert jobs[0].sizes == dict(width=64, height=32, frames=16)


def test_first_release_lora_path_on_base(repo, monkeypatch):
    """Tusun: `path` a LoRA (every key says "lora") fused at `lora_alpha` into the DreamBooth `base`."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "6-Tusun.yaml", """
        Tusun:
          base: "models/DreamBooth_LoRA/moonfilm_reality20.safetensors"
          path: "models/DreamBooth_LoRA/TUSUN.safetensors"
          motion_module:
            - "models/Motion_Module/mm_sd_v14.ckpt"

          seed:           [10154078483724687116, 2664393535095473805]
          steps:          25
          guidance_scale: 7.5
          lora_alpha: 0.6

          prompt:
            - "tusuncub with its mouth open, blurry, open mouth, fangs, photo background, looking at viewer"
            - "cute tusun with a blurry background, black background, simple background, signature, face"

          n_prompt:
            - "worst quality, low quality, deformed, distorted, disfigured, bad eyes, bad anatomy"
        """)
    (e,) = load_prompt_config(cfg)
    assert e.dreambooth_path == _abs(repo, "models/DreamBooth_LoRA/moonfilm_reality20.safetensors")
    assert e.loras == [(_abs(repo, "models/DreamBooth_LoRA/TUSUN.safetensors"), 0.6)]
    assert e.lora_alpha_rule == "original" and e.seeds == [10154078483724687116, 2664393535095473805]
    (job,) = _jobs(cfg)
    assert job.model["dreambooth"] == e.dreambooth_path and job.model["loras"] == e.loras
    assert job.model["lora_alpha_rule"] == "original"


def test_first_release_lora_without_base_goes_on_the_base_model(repo, monkeypatch):
    monkeypatch.chdir(repo)
    cfg = _config(repo, "lora-only.yaml", """
        Style:
          base: ""
          path: "models/DreamBooth_LoRA/TUSUN.safetensors"
          motion_module: "models/Motion_Module/mm_sd_v15.ckpt"
          prompt: ["a cat"]
          n_prompt: [""]
        """)
    (e,) = load_prompt_config(cfg)
    assert e.dreambooth_path is None and e.seeds == [-1]
    assert e.loras == [(_abs(repo, "models/DreamBooth_LoRA/TUSUN.safetensors"), 0.8)]  # later releases' default


DB, DB2 = "models/DreamBooth_LoRA/toonyou_beta3.safetensors", "models/DreamBooth_LoRA/moonfilm_reality20.safetensors"


@pytest.mark.parametrize("keys,error,match", [
    ((f'base: "{DB2}"', f'path: "{DB}"'), PromptConfigError,
     r"Bad: key 'base' is only used when 'path' is a LoRA, and 'path' '.*toonyou_beta3.safetensors' is not a LoRA"),
    ((f'base: "{DB2}"', 'path: ""'), PromptConfigError,
     r"key 'base' is only used when 'path' is a LoRA, and 'path' is empty"),
    ((f'base: "{DB2}"',), PromptConfigError,
     r"key 'base' names the DreamBooth a LoRA 'path' is fused into, but 'path' is missing"),
    ((f'path: "{DB}"', 'dreambooth_path: ""'), PromptConfigError,
     r"keys 'path'/'base' \(first-release layout\) and \['dreambooth_path'\] \(later releases\) cannot be combined"),
    (('path: "models/DreamBooth_LoRA/TUSUN.safetensors"', "lora_alpha: [0.5]"), PromptConfigError,
     r"key 'lora_alpha' must be a number, got \[0.5\]"),
    (('path: "models/DreamBooth_LoRA/broken.safetensors"',), InputError, r"Bad: key 'path': .*broken.safetensors"),
    (('path: "models/DreamBooth_LoRA/absent.safetensors"',), InputError,
     r"Bad: key 'path': DreamBooth checkpoint or LoRA 'models/DreamBooth_LoRA/absent.safetensors' not found"),
])
def test_first_release_mistakes_named(repo, monkeypatch, keys, error, match):
    monkeypatch.chdir(repo)
    (repo / "models" / "DreamBooth_LoRA" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    lines = [*keys, 'motion_module: "models/Motion_Module/mm_sd_v15.ckpt"', 'prompt: ["a cat"]', 'n_prompt: [""]']
    cfg = _config(repo, "bad.yaml", "Bad:\n" + "".join(f"  {line}\n" for line in lines))
    with pytest.raises(error, match=match) as e:
        load_prompt_config(cfg)
    assert str(e.value).startswith(f"{cfg}: Bad: ")


# ----------------------------------------------------------------------------- v2 (2023-09, mapping layout)

def test_v2_release_motion_lora_mapping(repo, monkeypatch):
    """v2-2-RealisticVision-MotionLoRA as written in 2023-09: named entries, MotionLoRA, `lora_model_path: ""`."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "5-RealisticVision-MotionLoRA.yaml", """
        ZoomIn:
          inference_config: "configs/inference/inference-v2.yaml"
          motion_module:
            - "models/Motion_Module/mm_sd_v15_v2.ckpt"

          motion_module_lora_configs:
            - path:  "models/MotionLoRA/v2_lora_ZoomIn.ckpt"
              alpha: 1.0

          dreambooth_path: "models/DreamBooth_LoRA/toonyou_beta3.safetensors"
          lora_model_path: ""

          seed:           45987230
          steps:          25
          guidance_scale: 7.5

          prompt:
            - "photo of coastline, rocks, storm weather, wind, waves, lightning, 8k uhd, dslr, soft lighting"
            - "close up photo of a rabbit, forest, haze, halation, bloom, dramatic atmosphere, centred"

          n_prompt:
            - "blur, haze, deformed iris, deformed pupils, semi-realistic, cgi, 3d, render, sketch, cartoon"
        """)
    (e,) = load_prompt_config(cfg)
    assert e.name == "ZoomIn" and e.seeds == [45987230, 45987230] and e.n_prompts[0] == e.n_prompts[1]
    assert e.motion_module == _abs(repo, "models/Motion_Module/mm_sd_v15_v2.ckpt")
    assert e.motion_module_lora_configs == [(_abs(repo, "models/MotionLoRA/v2_lora_ZoomIn.ckpt"), 1.0)]
    assert e.dreambooth_path == _abs(repo, "models/DreamBooth_LoRA/toonyou_beta3.safetensors") and e.loras == []
    (job,) = _jobs(cfg)
    assert job.model["motion_loras"] == e.motion_module_lora_configs and job.model["loras"] == []
    assert job.scheduler_config["beta_schedule"] == "linear"  # the original's inference-v2.yaml


# ----------------------------------------------------------------------------- v3 (2023-12, list layout)

V3_T2V = """
    - {scale_key}: 1.0
      adapter_lora_path: "models/Motion_Module/v3_sd15_adapter.ckpt"
      dreambooth_path:   ""

      inference_config: "configs/inference/inference-v3.yaml"
      motion_module:    "models/Motion_Module/v3_sd15_mm.ckpt"
    {controlnet}
      H: 256
      W: 384
      seed: [123,234]
      steps: 25
      guidance_scale: 8.5

      prompt:
        - "aerial view, beautiful forest, autumn, 4k, high quality"
        - "an oil painting of a sailboat in the ocean wave"
      n_prompt:
        - "worst quality, low quality, letterboxed"
    """


@pytest.mark.parametrize("scale_key", ["adapter_lora_scale", "domain_lora_scale"])  # HEAD, and 63bb388's key
def test_v3_release_domain_adapter(repo, monkeypatch, scale_key):
    monkeypatch.chdir(repo)
    cfg = _config(repo, "v3-1-T2V.yaml", V3_T2V.format(scale_key=scale_key, controlnet=""))
    (e,) = load_prompt_config(cfg)
    assert e.adapter_lora_path == _abs(repo, "models/Motion_Module/v3_sd15_adapter.ckpt")
    assert e.adapter_lora_scale == 1.0 and e.dreambooth_path is None and e.loras == []
    assert (e.W, e.H, e.L, e.seeds, e.guidance_scale) == (384, 256, None, [123, 234], 8.5)
    (job,) = _jobs(cfg)  # W/H per entry in this release: the entry's, unless a flag is given
    assert job.model["domain_adapter"] == (e.adapter_lora_path, 1.0) and job.model["dreambooth"] is None
    assert job.sizes == dict(width=384, height=256, frames=16)
    (job,) = _jobs(cfg, "--W", "64")  # a flag given on the command line is never ignored: it wins (sample's rule)
    assert job.sizes == dict(width=64, height=256, frames=16)


SPARSECTRL = """
      controlnet_config: "configs/inference/sparsectrl/latent_condition.yaml"
      controlnet_path:   "{path}"
      controlnet_image_indexs: [0,-1]
      controlnet_images:
        - "__assets__/demos/image/interpolation_1.png"
        - "__assets__/demos/image/interpolation_2.png"
"""


def test_v3_sparsectrl_keys_run_with_the_originals_meaning(repo, monkeypatch, tmp_path):
    """3_sparsectrl/3_1_sparsectrl_i2v.yaml's keys: the encoder file (the original's .ckpt layout), key images
    at controlnet_image_indexs (-1: the last frame), the inference yaml absent here (the file's settings)."""
    from PIL import Image

    from tests.convert import controlnet_fixtures as cf
    monkeypatch.chdir(repo)
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    (repo / "models" / "SparseCtrl").mkdir(exist_ok=True)
    cf.save_torch(cf.to_original_sparsectrl(cf.state_dict(cf.sparsectrl("rgb"))),
                  str(repo / "models" / "SparseCtrl" / "v3_sd15_sparsectrl_rgb.ckpt"), wrapper="controlnet")
    (repo / "__assets__" / "demos" / "image").mkdir(parents=True, exist_ok=True)
    for i in (1, 2):
        Image.fromarray(np.full((300, 400, 3), 60 * i, np.uint8)).save(
            repo / "__assets__" / "demos" / "image" / f"interpolation_{i}.png")
    sparsectrl = SPARSECTRL.format(path="models/SparseCtrl/v3_sd15_sparsectrl_rgb.ckpt")
    cfg = _config(repo, "3_1_sparsectrl_i2v.yaml", V3_T2V.format(scale_key="adapter_lora_scale", controlnet=sparsectrl))
    (e,) = load_prompt_config(cfg)
    assert e.sparsectrl == dict(path=_abs(repo, "models/SparseCtrl/v3_sd15_sparsectrl_rgb.ckpt"),
                                images=[_abs(repo, f"__assets__/demos/image/interpolation_{i}.png") for i in (1, 2)],
                                keyframes=[0, -1], conditioning_scale=1.0, normalize=False, config=None)
    (job,) = _jobs(cfg)
    sample.validate([job], str(tmp_path / "cache"))  # every check before loading: the file is a SparseCtrl encoder
    (control,) = job.control_inputs
    assert control.controlnet.kind == "sparsectrl" and control.controlnet.encodes_images
    assert np.asarray(control.images).shape == (2, 256, 384, 3) and list(control.keyframes) == [0, -1]
    np.testing.assert_allclose(np.asarray(control.images)[1], 120 / 255, atol=1e-6)
    # with controlnet_path empty the original reads none of the controlnet_* keys; neither do we
    cfg = _config(repo, "no_sparsectrl.yaml", V3_T2V.format(scale_key="adapter_lora_scale",
                                                            controlnet=SPARSECTRL.format(path="")))
    (e,) = load_prompt_config(cfg)
    assert e.adapter_lora_path is not None and e.sparsectrl is None


# ----------------------------------------------------------------------------- saved configs: random_seed

def test_saved_config_random_seed_reproduces_the_run(repo, monkeypatch):
    """The original saves the entry with `random_seed` (torch.initial_seed() per prompt) and, since v3, W/H/L.
    A -1 seed takes the recorded seed; an explicit seed (an edited config) wins."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "config.yaml", """
        - dreambooth_path: models/DreamBooth_LoRA/toonyou_beta3.safetensors
          inference_config: configs/inference/inference-v3.yaml
          motion_module: models/Motion_Module/v3_sd15_mm.ckpt
          seed: -1
          steps: 25
          guidance_scale: 8.5
          prompt:
          - a
          - b
          n_prompt:
          - ''
          W: 512
          H: 512
          L: 16
          random_seed:
          - 12826419327226573939
          - 451963003622034427
        - motion_module: models/Motion_Module/v3_sd15_mm.ckpt
          seed: [7, -1]
          prompt: [a, b]
          n_prompt: ['']
          random_seed: [8, 9]
        """)
    a, b = load_prompt_config(cfg)
    assert a.seeds == [12826419327226573939, 451963003622034427] and draw_seeds(a.seeds) == a.seeds
    assert b.seeds == [7, 9]
    assert (a.W, a.H, a.L) == (512, 512, 16)


def test_first_release_saved_config(repo, monkeypatch):
    """A first-release saved config: the named entry, its module list, and the last run's random_seed."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "saved-first.yaml", """
        ToonYou:
          base: ''
          path: models/DreamBooth_LoRA/toonyou_beta3.safetensors
          motion_module:
          - models/Motion_Module/mm_sd_v14.ckpt
          - models/Motion_Module/mm_sd_v15.ckpt
          seed: -1
          steps: 25
          guidance_scale: 7.5
          prompt:
          - a
          n_prompt:
          - ''
          random_seed:
          - 16372571278361863751
        """)
    es = load_prompt_config(cfg)
    assert [e.seeds for e in es] == [[16372571278361863751]] * 2


def test_minus_one_draws_per_prompt(repo, monkeypatch):
    """`seed: -1` (or missing) broadcasts, and each prompt then draws its own seed, as torch.seed() per prompt."""
    monkeypatch.chdir(repo)
    cfg = _config(repo, "random.yaml", """
        - motion_module: models/Motion_Module/v3_sd15_mm.ckpt
          seed: -1
          prompt: [a, b, c]
          n_prompt: [""]
        """)
    (e,) = load_prompt_config(cfg)
    assert e.seeds == [-1, -1, -1]
    drawn = draw_seeds(e.seeds)
    assert len(set(drawn)) == 3 and all(0 <= s < 2**64 for s in drawn)


# ----------------------------------------------------------------------------- LoRA strength, config vs flags

def _unet_after_loading(job, cache) -> dict:
    """The fused UNet params the job's model settings give, loaded the way `sample` loads them."""
    from animatediff_jax import loading
    from animatediff_jax.params import flatten
    pipe = loading.load_pipeline(**job.model, cache_dir=str(cache), check=False)
    return {p: np.asarray(v) for p, v in flatten(pipe.unet_params).items()}


def test_lora_strength_config_follows_the_original_flags_follow_kohya(repo, monkeypatch):
    """Tusun's LoRA at 0.6: from the config W += 0.6 · up @ down (the original's convert_lora, alpha ignored);
    from `--lora PATH:0.6` W += 0.6 · (alpha / rank) · up @ down. Both against NumPy, on the DreamBooth's UNet."""
    from safetensors.numpy import load_file
    monkeypatch.chdir(repo)
    cache = repo / "cache"
    cfg = _config(repo, "6-Tusun-one.yaml", """
        Tusun:
          base: "models/DreamBooth_LoRA/moonfilm_reality20.safetensors"
          path: "models/DreamBooth_LoRA/TUSUN.safetensors"
          motion_module: "models/Motion_Module/mm_sd_v14.ckpt"
          lora_alpha: 0.6
          prompt: ["tusuncub"]
          n_prompt: [""]
        """)
    (from_config,) = _jobs(cfg)
    (from_flags,) = _jobs_of([
        "--base", "models/StableDiffusion/stable-diffusion-v1-5", "--prompt", "tusuncub",
        "--dreambooth", "models/DreamBooth_LoRA/moonfilm_reality20.safetensors",
        "--motion-module", "models/Motion_Module/mm_sd_v14.ckpt",
        "--lora", "models/DreamBooth_LoRA/TUSUN.safetensors:0.6"])
    plain = _unet_after_loading(dataclasses.replace(from_config, model={**from_config.model, "loras": []}), cache)
    lora = load_file(str(repo / "models" / "DreamBooth_LoRA" / "TUSUN.safetensors"))
    for job, factor in ((from_config, 0.6), (from_flags, 0.6 * 1.0 / LORA_RANK)):
        fused = _unet_after_loading(job, cache)
        n = 0
        for key in (k for k in lora if k.endswith(".lora_down.weight")):
            module = key[len("lora_unet_"):-len(".lora_down.weight")]
            up, down = lora[key.replace("lora_down", "lora_up")], lora[key]
            assert float(lora[key.replace("lora_down.weight", "alpha")]) == 1.0 and down.shape[0] == LORA_RANK
            path = next(p for p in fused if "_".join(p[:-1]) == module and p[-1] == "kernel")
            expected = plain[path].astype(np.float64) + factor * (up.astype(np.float64) @ down).T  # Flax (in, out)
            np.testing.assert_allclose(fused[path], expected, rtol=1e-5, atol=1e-6)
            n += 1
        assert n >= 6
        untouched = [p for p in fused if p[-1] == "kernel" and "to_q" not in p and "to_k" not in p and "to_v" not in p]
        assert untouched and all(np.array_equal(fused[p], plain[p]) for p in untouched)


def test_config_written_from_flags_keeps_every_lora_and_the_kohya_rule(repo, monkeypatch, tmp_path):
    """`--lora a:0.5 --lora b:-0.3` -> config.yaml -> re-read: both LoRAs, their scales, the flags' (kohya) rule."""
    import yaml
    from animatediff_jax.sampling.prompt_config import resolved_config
    monkeypatch.chdir(repo)
    lora = "models/DreamBooth_LoRA/TUSUN.safetensors"
    (job,) = _jobs_of([
        "--base", "models/StableDiffusion/stable-diffusion-v1-5", "--prompt", "a cat", "--seed", "3",
        "--lora", f"{lora}:0.5", "--lora", f"{lora}:-0.3"])
    assert job.model["loras"] == [(lora, 0.5), (lora, -0.3)] and job.model.get("lora_alpha_rule", "kohya") == "kohya"
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(resolved_config([(job.entry, [3])]), sort_keys=False))
    (again,) = _jobs(saved)
    assert again.model["loras"] == [(_abs(repo, lora), 0.5), (_abs(repo, lora), -0.3)]
    assert again.model["lora_alpha_rule"] == "kohya" and again.entry.seeds == [3]
