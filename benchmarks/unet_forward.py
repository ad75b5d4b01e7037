"""Benchmark: UNet3D + motion modules forward (16 frames, batch 2), ours (jitted) vs diffusers' UNetMotionModel.

    python benchmarks/unet_forward.py [--configs small medium] [--repeats 3]

Both models get the same random weights (diffusers' module renamed by `convert.naming.state_dict_to_flax`,
motion input norm "joint" so the two compute the same function) and the same inputs; torch uses
torch.set_num_threads(os.cpu_count()), XLA uses all cores. Ours is timed after one warm-up call (the
compile, reported separately) for each attention kernel; each row is the median of `--repeats` calls. "speedup" = diffusers / ours.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import numpy as np
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from animatediff_jax.models.configs import MotionConfig, UNetConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.xla_options import jit
from benchmarks._timing import median_time
from convert.naming import state_dict_to_flax

CONFIGS = {
    # name: (UNet2DConditionModel kwargs, latent H, W)
    "small": (dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                   attention_head_dim=4, cross_attention_dim=64, norm_num_groups=16), 16, 16),
    "medium": (dict(block_out_channels=[64, 128, 256],
                    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=2,
                    attention_head_dim=8, cross_attention_dim=256, norm_num_groups=32), 32, 32),
}
BATCH, FRAMES, TOKENS = 2, 16, 77


def build(name):
    kwargs, h, w = CONFIGS[name]
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(in_channels=4, out_channels=4, sample_size=h, **kwargs)
    adapter = MotionAdapter(block_out_channels=kwargs["block_out_channels"],
                            motion_layers_per_block=kwargs["layers_per_block"], motion_num_attention_heads=8,
                            motion_norm_num_groups=kwargs["norm_num_groups"], motion_max_seq_length=32)
    ref = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    with torch.no_grad():
        for p in ref.parameters():  # proj_out is zero-initialised: randomise everything
            p.copy_(torch.randn_like(p) * 0.02)
    params = state_dict_to_flax({k: v.numpy() for k, v in ref.state_dict().items()}, skip=[r"pos_embed\.pe$"])
    motion = MotionConfig(num_attention_heads=8, max_seq_length=32, norm_num_groups=kwargs["norm_num_groups"],
                          input_norm="joint")
    ours = UNet3DConditionModel(UNetConfig.from_dict(kwargs), motion)
    rng = np.random.RandomState(0)
    inputs = (rng.randn(BATCH, FRAMES, h, w, 4).astype(np.float32), np.array([999, 500]),
              rng.randn(BATCH, TOKENS, kwargs["cross_attention_dim"]).astype(np.float32))
    n_params = sum(p.numel() for p in ref.parameters())
    return ref, ours, {"params": params}, inputs, n_params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", nargs="+", default=["xla", "chunked"], help="our attention kernels to time")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"batch {BATCH}, {FRAMES} frames, {TOKENS} text tokens, float32")
    print(f"{'config':8} {'latent':>7} {'params':>8} {'attention':>9} {'compile s':>9} {'ours s':>8} "
          f"{'diffusers s':>11} {'speedup':>7} {'rel err':>8}")
    for name in args.configs:
        ref, ours, params, (sample, t, text), n_params = build(name)
        ts, tt, te = (torch.from_numpy(sample).permute(0, 4, 1, 2, 3), torch.from_numpy(t),
                      torch.from_numpy(text).repeat_interleave(FRAMES, dim=0))
        with torch.no_grad():
            want = ref(ts, tt, te).sample.permute(0, 2, 3, 4, 1).numpy()
            ref_s = median_time(lambda: ref(ts, tt, te), args.repeats)
        for impl in args.attention:
            fwd = jit(dataclasses.replace(ours, attention_impl=impl).apply)
            t0 = time.perf_counter()
            out = np.asarray(fwd(params, sample, t, text))
            compile_s = time.perf_counter() - t0
            ours_s = median_time(lambda: fwd(params, sample, t, text).block_until_ready(), args.repeats)
            err = np.linalg.norm(out - want) / np.linalg.norm(want)
            print(f"{name:8} {sample.shape[2]:>3}x{sample.shape[3]:<3} {n_params / 1e6:>7.1f}M {impl:>9} "
                  f"{compile_s:>9.1f} {ours_s:>8.3f} {ref_s:>11.3f} {ref_s / ours_s:>6.2f}x {err:>8.1e}")


if __name__ == "__main__":
    main()
