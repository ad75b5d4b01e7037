"""`--controlnet PATH[:SCALE] --control-video V`, `--sparsectrl PATH --keyframes --keyframe-images` and the
prompt-config keys (`controlnets`, the original v3's `controlnet_*`): every problem one line naming the flag
before any model loads; a run's config.yaml records the controls and reproduces the videos bit for bit."""
import os
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from animatediff_jax import sample
from animatediff_jax.nonfinite import why_nonfinite
from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.params import flatten
from animatediff_jax.sample_control import load_controls, read_key_image
from convert.controlnet import load_controlnet
from tests.convert import controlnet_fixtures as cf
from tests.sampling import tiny_models as tm
from tests.sampling.stop_at_load import Validated, stop_at_load
from tests.utils import as_variants, cache_repo

SIZE = ["--W", "32", "--H", "32", "--L", "4", "--steps", "2", "--no-progress", "--save-npy"]


def _frames(folder, n, size=(32, 32), seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:03d}.png"))
    return str(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("control_cli")
    tm.write_base_folder(str(root / "base"))
    tm.write_adapter_folder(str(root / "adapter"))
    cf.save_folder(cf.controlnet("small", seed=5), str(root / "cn"))
    rgb = dict(cf.SPARSECTRL_RGB)
    from diffusers import SparseControlNetModel
    cf.save_folder(cf.randomize(SparseControlNetModel(**rgb), seed=6), str(root / "sparse"))
    from diffusers import ControlNetModel
    cf.save_folder(cf.randomize(ControlNetModel(**dict(cf.CONTROLNET_SMALL, cross_attention_dim=64)), seed=7),
                   str(root / "cn64"))  # the miniature's text width
    _frames(root / "video", 4)
    _frames(root / "one", 1, seed=1)
    _frames(root / "wide", 4, size=(32, 48))
    _frames(root / "five", 5)
    for i in range(2):
        Image.fromarray(np.random.default_rng(10 + i).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            root / f"key{i}.png")
    return root


@pytest.fixture
def env(files, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.chdir(files)
    env.jobs = stop_at_load(monkeypatch)
    return env


MODEL = ["--base", "base", "--motion-module", "adapter", "--prompt", "a cat", *SIZE, "--out", "out"]


@pytest.mark.parametrize("flags,rc,message", [
    (["--controlnet", "cn"], 2, "--control-video: 0 given for 1 --controlnet"),
    (["--controlnet", "cn", "--control-video", "video", "--control-guidance-start", "0.1", "--control-guidance-start",
      "0.2"], 2, "--control-guidance-start: 2 given for 1 --controlnet"),
    (["--controlnet", "cn:nan", "--control-video", "video"], 2, "--controlnet: 'cn:nan': scale must be a finite"),
    (["--controlnet", "nope", "--control-video", "video"], 1, "--controlnet nope: not found"),
    (["--controlnet", "cn", "--control-video", "nope"], 1, "--control-video nope: not found"),
    (["--controlnet", "cn", "--control-video", "wide"], 2,
     "--control-video wide: 48x32 frames with 3 channels; this video needs 32x32 (the output size), 3 channels"),
    (["--controlnet", "cn", "--control-video", "five"], 2,
     "--control-video five: 5 control frames for a 4-frame video; give one image per frame (4) or a single image"),
    (["--controlnet", "cn:-1", "--control-video", "video"], 2, "--controlnet: 'cn:-1': scale must be in [0, 10], got -1"),
    (["--controlnet", "cn:1e30", "--control-video", "video"], 2,  # saturated the video to flat colour, exit 0
     "--controlnet: 'cn:1e30': scale must be in [0, 10], got 1e+30"),
    # --steps 2: step 0 is [0, 0.5], step 1 [0.5, 1]; a window of 0.5-0.6 holds neither (it ran as if absent)
    (["--controlnet", "cn", "--control-video", "video", "--control-guidance-start", "0.5",
      "--control-guidance-end", "0.6"], 2, "--controlnet cn: its guidance window 0.5–0.6 keeps none of the 2 "
                                          "denoising steps (step i needs start ≤ i/2 and (i+1)/2 ≤ end)"),
    (["--controlnet", "cn", "--control-video", "video", "--control-guidance-start", "0.5", "--init-video", "video",
      "--strength", "0.5"], 2, "--controlnet cn: its guidance window 0.5–1.0 keeps none of the 1 denoising steps"),
    (["--controlnet", "cn", "--control-video", "video", "--control-guidance-start", "0.6",
      "--control-guidance-end", "0.5"], 2, "need 0 ≤ control_guidance_start < control_guidance_end ≤ 1"),
    (["--controlnet", "sparse", "--control-video", "video"], 2, "--controlnet sparse: a SparseCtrl encoder; pass it "
                                                                "with --sparsectrl"),
    (["--sparsectrl", "cn", "--keyframes", "0", "--keyframe-images", "key0.png"], 2,
     "--sparsectrl cn: a ControlNet; pass it with --controlnet"),
    (["--sparsectrl", "sparse", "--keyframes", "0,4", "--keyframe-images", "key0.png,key1.png"], 2,
     "--sparsectrl sparse: keyframes must be frame indices in [0, 4)"),
    (["--sparsectrl", "sparse", "--keyframes", "0,-4", "--keyframe-images", "key0.png,key1.png"], 2,
     "keyframes [0, -4] name a frame twice"),
    (["--sparsectrl", "sparse", "--keyframes", "0,1", "--keyframe-images", "key0.png"], 2,
     "--keyframe-images: 1 images for 2 --keyframes"),
    (["--keyframes", "0"], 2, "--keyframes: goes with --sparsectrl"),
])
def test_bad_controls_are_refused_before_loading(env, capsys, flags, rc, message):
    assert sample.main([*MODEL, *flags]) == rc
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not env.jobs and not os.path.exists("out")


def test_a_sparsectrl_encoder_with_a_stretched_position_encoding_is_one_line(env, tmp_path, capsys):
    """It was used with a warning: the network computes the sinusoid in place of the stored encoding."""
    from diffusers import SparseControlNetModel
    sd = cf.state_dict(cf.randomize(SparseControlNetModel(**dict(cf.SPARSECTRL_RGB)), seed=6))
    ckpt = cf.save_torch({k: v * 2 if k.endswith("pos_encoder.pe") else v for k, v in cf.to_original_sparsectrl(sd).items()},
                         str(tmp_path / "v3_sd15_sparsectrl_rgb.ckpt"))
    assert sample.main([*MODEL, "--sparsectrl", ckpt, "--keyframes", "0", "--keyframe-images", "key0.png"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --sparsectrl {ckpt}: its stored position encoding") and err.count("\n") == 1, err
    assert "pass `--replace-pe` (python -m convert controlnet, then --sparsectrl the converted file)" in err
    assert not env.jobs


@pytest.mark.parametrize("net,message", [
    ("cn", "--controlnet cn: cross_attention_dim 32 does not fit the base model's text encoder (64)"),
    ("cn64", "--controlnet cn64: embeds control images 8x down to latent size, but the VAE's factor is 4"),
])
def test_controlnets_of_another_family_are_refused(env, capsys, net, message):
    """The shipped miniature (text width 64, VAE factor 4) with tiny SD-style ControlNets."""
    assert sample.main(["--motion-module", os.path.join(MINIATURE, "motion_module_B.safetensors"), "--prompt", "a",
                        "--W", "32", "--H", "32", "--L", "4", "--controlnet", net, "--control-video", "video",
                        "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_sparsectrl_file_given_as_motion_module_is_refused(env, capsys):
    assert sample.main(["--base", "base", "--motion-module", "sparse", "--prompt", "a", *SIZE, "--out", "out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "sparse" in err and "SparseCtrl" in err, err
    assert not env.jobs


@pytest.mark.parametrize("keys,rc,message", [
    ("controlnets: [{{path: {f}/sparse, video: {f}/video}}]", 2,
     "controlnets[0].path {f}/sparse: a SparseCtrl encoder; give it as controlnet_path"),
    ("controlnet_path: {f}/cn\n  controlnet_images: [{f}/key0.png]", 2,
     "controlnet_path {f}/cn: a ControlNet; give it as a controlnets item's path"),
    ("controlnets: [{{path: {f}/base, video: {f}/video}}]", 1, "controlnets[0].path {f}/base: "),
    ("controlnet_path: {f}/sparse\n  controlnet_images: [{f}/base/unet/config.json]", 1,
     "controlnet_images {f}/base/unet/config.json: cannot read as an image"),
    # a scale far beyond any use saturated the video to flat colour, exit 0
    ("controlnets: [{{path: {f}/cn, video: {f}/video, conditioning_scale: 1e30}}]", 2,
     "--controlnet/controlnets[0].conditioning_scale: must be in [0, 10], got 1e+30"),
    ("controlnet_path: {f}/sparse\n  controlnet_images: [{f}/key0.png]\n  controlnet_conditioning_scale: 11", 2,
     "--sparsectrl/controlnet_conditioning_scale: must be in [0, 10], got 11"),
])
def test_a_config_entry_s_controls_are_named_by_config_entry_and_key(env, files, tmp_path, capsys, keys, rc, message):
    """The user wrote a config: its ControlNet / SparseCtrl errors name the config and the entry with the key
    (they named the key alone, and a network of the other kind by its flag)."""
    config = tmp_path / "c.yaml"
    config.write_text(f"- prompt: [a cat]\n  motion_module: {files}/adapter\n  {keys.format(f=files)}\n")
    assert sample.main([str(config), "--base", "base", *SIZE, "--out", "out"]) == rc
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: entry 0: {message.format(f=files)}") and err.count("\n") == 1, err
    assert not env.jobs


def test_good_controls_pass_validation(env):
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv := [
            *MODEL, "--controlnet", "cn:0.5", "--control-video", "one", "--sparsectrl", "sparse",
            "--keyframes", "0,-1", "--keyframe-images", "key0.png,key1.png"]), argv)
    (job,) = env.jobs
    net, sparse = job.control_inputs
    assert np.asarray(net.images).shape == (1, 32, 32, 3) and net.conditioning_scale == 0.5
    assert np.asarray(sparse.images).shape == (2, 32, 32, 3) and list(sparse.keyframes) == [0, -1]


def test_controls_take_hub_ids_and_the_variant(env, hub_cache, capsys):
    """A ControlNet / SparseCtrl repo's id resolves as --base's does (a fake offline cache); --variant picks
    a ControlNet folder's weight variant (its several-variants error asks for it); config.yaml keeps the ids."""
    cache_repo(hub_cache, "org/cn", lambda d: as_variants(shutil.copytree("cn", d), "fp16", "bf16"))
    cache_repo(hub_cache, "org/sparse", lambda d: shutil.copytree("sparse", d))
    argv = [*MODEL, "--controlnet", "org/cn:0.5", "--control-video", "one", "--sparsectrl", "org/sparse",
            "--keyframes", "0", "--keyframe-images", "key0.png"]
    assert sample.main(argv) == 1
    assert capsys.readouterr().err == ("error: --controlnet org/cn: no plain weights, only the variants bf16, fp16 of "
                                       "diffusion_pytorch_model: choose one (--variant)\n")
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv + ["--variant", "fp16"]), argv)
    (job,) = env.jobs
    net, sparse = job.control_inputs
    assert (net.controlnet.kind, sparse.controlnet.kind) == ("controlnet", "sparsectrl")
    assert (job.entry.raw["controlnets"][0]["path"], job.entry.raw["controlnet_path"]) == ("org/cn", "org/sparse")
    loaded, _ = load_controls(job.controls, job.control_inputs, dtype="float32", attention_impl="xla", variant="fp16")
    for path, value in flatten(load_controlnet("cn").params).items():  # the weights of the folder cached as org/cn
        np.testing.assert_array_equal(np.asarray(flatten(loaded.controlnet.params)[path]), value)


def test_key_images_are_read_as_the_original_reads_them(files):
    """The original's RandomResizedCrop((H, W), scale=(1, 1), ratio=(W/H, W/H)) finds no random crop of
    another aspect and falls back to the centre crop at W/H; then a bilinear resize (PIL) and ToTensor.
    (torchvision is not in the test environment; these are the cases of that rule.)"""
    with Image.open(files / "key0.png") as im:  # 56 x 40 (W x H)
        image = im.convert("RGB")
    same_aspect = read_key_image(str(files / "key0.png"), 20, 28)  # 28:20 = 56:40: a plain resize
    np.testing.assert_array_equal(same_aspect, np.asarray(image.resize((28, 20), Image.BILINEAR), np.float32) / 255)
    square = read_key_image(str(files / "key0.png"), 16, 16)  # the middle 40 x 40 columns 8..48
    np.testing.assert_array_equal(square, np.asarray(image.crop((8, 0, 48, 40)).resize((16, 16), Image.BILINEAR),
                                                     np.float32) / 255)
    tall = read_key_image(str(files / "key0.png"), 32, 16)  # W:H = 1:2 -> 20 x 40 from column 18
    np.testing.assert_array_equal(tall, np.asarray(image.crop((18, 0, 38, 40)).resize((16, 32), Image.BILINEAR),
                                                   np.float32) / 255)
    grey = read_key_image(str(files / "key0.png"), 16, 16, normalize=True)  # the scribble configs' normalisation
    mean = square.mean(axis=-1)
    np.testing.assert_allclose(grey[..., 0], (mean - mean.min()) / (mean.max() - mean.min()), atol=1e-6)
    assert np.array_equal(grey[..., 0], grey[..., 2])


def _videos(out):
    (run,) = os.listdir(out)
    folder = out / run
    return folder, {f: np.load(folder / "sample" / f) for f in sorted(os.listdir(folder / "sample"))
                    if f.endswith(".npy")}


def test_config_yaml_records_the_controls_and_reproduces_the_videos(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.chdir(files)
    model = ["--base", "base", "--motion-module", "adapter", "--prompt", "a cat", "--seed", "3", *SIZE]
    controls = ["--controlnet", "cn:0.8", "--control-video", "video", "--control-guidance-end", "0.5",
                "--sparsectrl", "sparse:0.9", "--keyframes", "0,-1", "--keyframe-images", "key0.png,key1.png"]
    assert sample.main([*model, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert sample.main([*model, *controls, "--out", str(tmp_path / "controlled")]) == 0
    # the models line names every network the videos come from (it named base and motion module only)
    assert ("  models: base base, motion module adapter, ControlNet cn x0.8 on video from 0 to 0.5 of the steps, "
            "SparseCtrl sparse x0.9 at frames 0,-1\n") in capsys.readouterr().out
    _, plain = _videos(tmp_path / "plain")
    folder, controlled = _videos(tmp_path / "controlled")
    assert all(np.abs(controlled[n] - plain[n]).max() > 1e-4 for n in plain)  # the controls reach the UNet
    (entry,) = yaml.safe_load((folder / "config.yaml").read_text())
    assert entry["controlnets"] == [dict(path=str(files / "cn"), video=str(files / "video"), conditioning_scale=0.8,
                                         control_guidance_start=0.0, control_guidance_end=0.5)]
    assert (entry["controlnet_path"], entry["controlnet_image_indexs"], entry["controlnet_conditioning_scale"]) == (
        str(files / "sparse"), [0, -1], 0.9)
    monkeypatch.chdir(tmp_path)
    assert sample.main([str(folder / "config.yaml"), "--no-progress", "--save-npy", "--out",
                        str(tmp_path / "again")]) == 0
    _, again = _videos(tmp_path / "again")
    for n in controlled:
        np.testing.assert_array_equal(again[n], controlled[n])


@pytest.mark.parametrize("config", [False, True], ids=["flags", "config"])
def test_nonfinite_controlnet_weights_are_refused_at_load(files, tmp_path, monkeypatch, capsys, config):
    """A ControlNet holding NaN got a warning, and the run then blamed an overflow ('although every weight is
    finite'): it is refused with the pipeline's weights, before 'sampling into', naming the flag or key."""
    from tests.robustness.test_nonfinite_sampling import poisoned
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    monkeypatch.chdir(files)
    bad = tmp_path / "cn"
    shutil.copytree(files / "cn", bad)
    weights = str(bad / "diffusion_pytorch_model.safetensors")
    poisoned(weights, weights)
    if config:
        c = tmp_path / "c.yaml"
        c.write_text(f"- prompt: [a cat]\n  motion_module: {files}/adapter\n"
                     f"  controlnets: [{{path: {bad}, video: {files}/video}}]\n")
        argv, named = [str(c), "--base", "base"], f"{c}: entry 0: controlnets[0].path {bad}"
    else:
        argv = ["--base", "base", "--motion-module", "adapter", "--prompt", "a cat", "--controlnet", str(bad),
                "--control-video", "video"]
        named = f"--controlnet {bad}"
    assert sample.main([*argv, *SIZE, "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    *bars, last, end = err.split("\n")  # the conversions' progress bars end their lines; then one error line
    assert last.startswith(f"error: {named}: 1 tensor holds NaN/Inf: ") and end == "", err
    assert not any("error" in bar for bar in bars), err
    assert "sampling into" not in out and not (tmp_path / "out").exists()


def test_a_nonfinite_video_names_nonfinite_weights_rather_than_an_overflow():
    """The NaN-video message said 'although every weight is finite' without looking: weights cast to a
    narrower dtype (or read unchecked) can hold Inf; it names them, and claims an overflow only when true."""
    from types import SimpleNamespace
    from animatediff_jax.sampling.control import Control, ControlNet
    finite = {"w": np.ones(2, np.float32)}
    pipe = SimpleNamespace(description={"dtype": "float16"}, unet_params=finite, vae_params=finite, text_params=finite)
    control = Control(ControlNet("controlnet", None, {"conv": {"kernel": np.array([np.inf], np.float16)}}, "--controlnet cn"),
                      None)
    message = why_nonfinite(pipe, [control])
    assert "every weight is finite" not in message and "conv/kernel' (Inf)" in message and "float32" in message
    assert "although every weight is finite: the computation overflows" in why_nonfinite(pipe, [])
