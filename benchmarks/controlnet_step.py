"""Benchmark: cost of a ControlNet / SparseCtrl encoder per denoising step, relative to the plain UNet step.

    PYTHONPATH=. python benchmarks/controlnet_step.py [--configs tiny medium sd15] [--frames 16] [--batch 2] [--repeats 3]
                                         [--dtype float32|bfloat16] [--flops]

One step = one jitted UNet3DConditionModel call on (batch, frames, h, w, 4) latents (batch 2 = the
two halves of classifier-free guidance); "+ controlnet" adds a ControlNetModel (per-frame, condition
at 8x the latent size) whose residuals the UNet adds; "+ sparsectrl" a SparseControlNetModel (RGB
variant: 4-channel latent condition + mask, motion modules). Random weights (N(0, 1/fan_in)), the
same inputs for every row. Each row: compile (first call) seconds, then the median of `--repeats`
timed calls, and the ratio to the plain step. `--flops` instead prints XLA's cost analysis of each
lowered step (floating-point operations, nothing allocated or run: machine-independent, so SD1.5 sizes
are cheap on any host). No network is compared to another implementation here
(tests/models/test_controlnet.py does that).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.models.configs import (MOTION_SPARSECTRL, MOTION_V3, SD15_CONTROLNET, SD15_UNET,
                                            ControlNetConfig, UNetConfig)
from animatediff_jax.models.controlnet import ControlNetModel, SparseControlNetModel
from animatediff_jax.models.init import random_params
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.xla_options import jit
from benchmarks._timing import median_time

_SMALL = dict(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
CONFIGS = {  # name: (UNetConfig, latent side)
    "tiny": (UNetConfig(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                        attention_head_dim=4, cross_attention_dim=64, norm_num_groups=16), 16),
    "medium": (UNetConfig(block_out_channels=(64, 128, 256), layers_per_block=2, attention_head_dim=8,
                          cross_attention_dim=256, norm_num_groups=32, **_SMALL), 32),
    "sd15": (SD15_UNET, 64),
}
TOKENS = 77


def controlnet_config(unet: UNetConfig) -> ControlNetConfig:
    """The ControlNet of `unet`'s encoder layout (8x condition embedding, as SD1.x's)."""
    if unet == SD15_UNET:
        return SD15_CONTROLNET
    fields = ("in_channels", "block_out_channels", "down_block_types", "layers_per_block", "attention_head_dim",
              "cross_attention_dim", "norm_num_groups")
    return ControlNetConfig(**{k: getattr(unet, k) for k in fields},
                            conditioning_embedding_out_channels=(8, 16, 16, 16))


def param_shapes(module, *inputs):
    """The params tree of `module` as ShapeDtypeStructs (traced, nothing allocated)."""
    return jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a), *inputs)["params"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "medium"], choices=list(CONFIGS))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--flops", action="store_true", help="XLA cost analysis of the lowered steps, no runs")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}, {jax.devices()[0].device_kind}); batch {args.batch}, {args.frames} frames, "
          f"{args.dtype}")
    if args.flops:
        print(f"{'config':7} {'latent':>7} {'step':>15} {'TFLOP':>9} {'x plain':>7}")
    else:
        print(f"{'config':7} {'latent':>7} {'step':>15} {'compile s':>9} {'step s':>8} {'x plain':>7}")
    for name in args.configs:
        ucfg, side = CONFIGS[name]
        rng = np.random.default_rng(0)
        b, f = args.batch, args.frames
        x = rng.standard_normal((b, f, side, side, 4), np.float32)
        t = np.array([500] * b)
        text = rng.standard_normal((b, TOKENS, ucfg.cross_attention_dim), np.float32)
        unet = UNet3DConditionModel(ucfg, dataclasses.replace(MOTION_V3, norm_num_groups=ucfg.norm_num_groups),
                                    dtype=dtype)
        cn_cfg = controlnet_config(ucfg)
        controlnet = ControlNetModel(cn_cfg, dtype=dtype)
        s = cn_cfg.condition_downsample_factor()
        image = rng.random((b, f, side * s, side * s, 3), np.float32)
        sparse_cfg = dataclasses.replace(cn_cfg, conditioning_channels=4, concat_conditioning_mask=True,
                                         use_simplified_condition_embedding=True, set_noisy_sample_input_to_zero=True)
        sparse_motion = dataclasses.replace(MOTION_SPARSECTRL, norm_num_groups=ucfg.norm_num_groups)
        sparse = SparseControlNetModel(sparse_cfg, sparse_motion, dtype=dtype)
        latent_cond = rng.standard_normal((b, f, side, side, 4), np.float32)
        mask = np.zeros((b, f), np.float32)
        mask[:, 0] = 1.0
        if args.flops:  # abstract params: nothing allocated
            up, cp = param_shapes(unet, x, t, text), param_shapes(controlnet, x, t, text, image)
            sp = param_shapes(sparse, x, t, text, latent_cond, mask)
        else:
            up = random_params(unet, 0, x, t, text)
            cp = random_params(controlnet, 1, x, t, text, image)
            sp = random_params(sparse, 2, x, t, text, latent_cond, mask)

        steps = {
            "plain": (jit(lambda p, x, t, c: unet.apply({"params": p}, x, t, c)), (up, x, t, text)),
            "+ controlnet": (jit(lambda p, q, x, t, c, i: unet.apply(
                {"params": p}, x, t, c, *controlnet.apply({"params": q}, x, t, c, i, 1.0))),
                (up, cp, x, t, text, image)),
            "+ sparsectrl": (jit(lambda p, q, x, t, c, i, m: unet.apply(
                {"params": p}, x, t, c, *sparse.apply({"params": q}, x, t, c, i, m, 1.0))),
                (up, sp, x, t, text, latent_cond, mask)),
        }
        plain_s = None
        for label, (fn, inputs) in steps.items():
            if args.flops:
                flops = fn.lower(*inputs).cost_analysis()["flops"]
                plain_s = plain_s or flops
                print(f"{name:7} {side:>3}x{side:<3} {label:>15} {flops / 1e12:>9.2f} {flops / plain_s:>6.2f}x",
                      flush=True)
                continue
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*inputs))
            compile_s = time.perf_counter() - t0
            step_s = median_time(lambda: jax.block_until_ready(fn(*inputs)), args.repeats)
            plain_s = plain_s or step_s
            print(f"{name:7} {side:>3}x{side:<3} {label:>15} {compile_s:>9.1f} {step_s:>8.3f} "
                  f"{step_s / plain_s:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
