"""Converted weights run in our UNet3D give diffusers' outputs (float32, rel err <= 1e-4):
motion modules from original files and from our own export, and LoRA-fused UNets."""
import copy

import jax
import numpy as np
import torch
from diffusers import MotionAdapter, UNetMotionModel

from animatediff_jax.models.configs import UNetConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.params import flatten, insert_motion, unflatten
from convert.export import export_original
from convert.lora import apply_lora_files
from convert.motion import load_motion_module, with_overrides
from tests.convert.lora_helpers import flax_params, kohya_state_dict, save, tiny_pipeline, tiny_text_encoder, tiny_unet
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original
from tests.utils import rel_err


def inputs(batch, frames, h, w, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randn(batch, frames, h, w, 4).astype(np.float32), np.array([981, 40][:batch]),
            rng.randn(batch, 7, 32).astype(np.float32))


def run_diffusers(model, sample, timesteps, text):
    """UNetMotionModel on (B, F, H, W, C) inputs, output in the same layout."""
    frames = sample.shape[1]
    with torch.no_grad():
        out = model(torch.from_numpy(sample).permute(0, 4, 1, 2, 3), torch.from_numpy(timesteps),
                    torch.from_numpy(text).repeat_interleave(frames, dim=0)).sample
    return out.permute(0, 2, 3, 4, 1).numpy()


def run_ours(unet2d, mm, params, sample, timesteps, text, *more_params):
    """Our UNet3D output for `params` (and for each of `more_params`, same compiled function)."""
    # diffusers normalises the motion-module input over all frames jointly and its resnets per frame
    motion = None if mm is None else with_overrides(mm, input_norm="joint", resnet_norm="frame").config
    apply = jax.jit(UNet3DConditionModel(UNetConfig.from_dict(dict(unet2d.config)), motion).apply)
    outs = [np.asarray(apply({"params": p}, sample, timesteps, text)) for p in (params,) + more_params]
    return outs[0] if not more_params else outs


def unet_with_motion(unet2d, mm):
    """Our full params: the 2D UNet's converted weights with the converted motion modules inserted."""
    model = UNet3DConditionModel(UNetConfig.from_dict(dict(unet2d.config)), mm.config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs(1, 2, 8, 8))["params"]
    flat = flatten(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    flat.update(flatten(flax_params(unet2d)))
    return insert_motion(unflatten(flat), mm.params)


def test_original_v2_file_runs_like_diffusers(tmp_path):
    unet2d = tiny_unet(seed=3)
    adapter = random_adapter("v2", (32, 64), 2)
    write_original(original_state_dict(adapter), tmp_path / "mm.ckpt", wrapper=True, module_prefix=True)
    mm = load_motion_module(tmp_path / "mm.ckpt", heads=2, norm_num_groups=8)
    reference = UNetMotionModel.from_unet2d(copy.deepcopy(unet2d), adapter).eval()
    sample, timesteps, text = inputs(2, 5, 8, 12)
    want = run_diffusers(reference, sample, timesteps, text)
    got = run_ours(unet2d, mm, unet_with_motion(unet2d, mm), sample, timesteps, text)
    print(f"rel err {rel_err(got, want):.2e}")
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)


def test_exported_v3_module_runs_like_ours_in_diffusers(tmp_path):
    """Flax -> original file -> MotionAdapter.from_single_file -> UNetMotionModel: same outputs as ours."""
    unet2d = tiny_unet(seed=4)
    adapter = random_adapter("v3", (32, 64), 2, seed=7)
    write_original(original_state_dict(adapter), tmp_path / "src.safetensors")
    mm = load_motion_module(tmp_path / "src.safetensors", heads=2, norm_num_groups=8)
    export_original(mm.params, mm.config, tmp_path / "exported.safetensors")
    adapter.save_config(tmp_path)
    loaded = MotionAdapter.from_single_file(str(tmp_path / "exported.safetensors"), config=str(tmp_path))
    reference = UNetMotionModel.from_unet2d(copy.deepcopy(unet2d), loaded).eval()
    sample, timesteps, text = inputs(1, 6, 12, 8, seed=1)
    want = run_diffusers(reference, sample, timesteps, text)
    got = run_ours(unet2d, mm, unet_with_motion(unet2d, mm), sample, timesteps, text)
    print(f"rel err {rel_err(got, want):.2e}")
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)


def test_lora_fused_unet_runs_like_diffusers_fused(tmp_path):
    unet2d, te = tiny_unet(seed=5), tiny_text_encoder()
    save(kohya_state_dict(unet2d, te, seed=6, ldm=True), tmp_path / "ldm.safetensors")
    save(kohya_state_dict(unet2d, te, seed=6), tmp_path / "twin.safetensors")  # same tensors, diffusers names
    ours = apply_lora_files({"unet": flax_params(unet2d)}, [(str(tmp_path / "ldm.safetensors"), 0.9)],
                            skip_other=True)["unet"]
    reference = copy.deepcopy(unet2d)
    pipe = tiny_pipeline(reference, copy.deepcopy(te))
    pipe.load_lora_weights(str(tmp_path / "twin.safetensors"))
    pipe.fuse_lora(lora_scale=0.9)
    pipe.unload_lora_weights()
    sample, timesteps, text = inputs(2, 3, 8, 8, seed=2)
    b, f = sample.shape[:2]
    with torch.no_grad():
        want = reference(torch.from_numpy(sample.reshape(b * f, 8, 8, 4)).permute(0, 3, 1, 2),
                         torch.from_numpy(timesteps).repeat_interleave(f),
                         torch.from_numpy(text).repeat_interleave(f, dim=0)).sample
    want = want.permute(0, 2, 3, 1).numpy().reshape(sample.shape)
    got, unfused = run_ours(unet2d, None, ours, sample, timesteps, text, flax_params(unet2d))
    print(f"rel err {rel_err(got, want):.2e}")
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)
    assert rel_err(unfused, want) > 1e-2  # the LoRA changed the output



def test_lora_fused_text_encoder_runs_like_diffusers_fused(tmp_path):
    from animatediff_jax.models.clip_text import CLIPTextModel
    from animatediff_jax.models.configs import CLIPTextConfig
    unet2d, te = tiny_unet(), tiny_text_encoder(seed=8)
    save(kohya_state_dict(unet2d, te, seed=9, locon=False), tmp_path / "k.safetensors")
    # our text-encoder trees keep the `text_model/` level SD checkpoints have
    ours = apply_lora_files({"unet": flax_params(unet2d), "text_encoder": {"text_model": flax_params(te)}},
                            [(str(tmp_path / "k.safetensors"), 0.75)])["text_encoder"]
    reference = copy.deepcopy(te)
    pipe = tiny_pipeline(copy.deepcopy(unet2d), reference)
    pipe.load_lora_weights(str(tmp_path / "k.safetensors"))
    pipe.fuse_lora(lora_scale=0.75)
    pipe.unload_lora_weights()
    ids = np.random.RandomState(3).randint(3, 100, size=(2, 16))
    with torch.no_grad():
        want = reference(torch.from_numpy(ids)).last_hidden_state.numpy()
    model = CLIPTextModel(CLIPTextConfig.from_dict(te.config.to_dict()))
    got = np.asarray(jax.jit(model.apply)({"params": ours}, ids.astype(np.int32)).last_hidden_state)
    print(f"rel err {rel_err(got, want):.2e}")
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)
    with torch.no_grad():
        unfused = te(torch.from_numpy(ids)).last_hidden_state.numpy()
    assert rel_err(unfused, want) > 1e-2  # the LoRA changed the output
