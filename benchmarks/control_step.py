"""Cost of control per denoising step: the plain step vs the step with one ControlNet, two ControlNets,
and one SparseCtrl (RGB) encoder.

    PYTHONPATH=. python benchmarks/control_step.py                          # small geometry, 16x64², CPU
    PYTHONPATH=. python benchmarks/control_step.py --geometry sd15 --frames 16 --size 512 --dtype bfloat16  # GPU

Times `AnimateDiffPipeline.step_function` (one jitted DDIM step, batch 1 with classifier-free guidance as
one doubled batch, the control residuals computed inside it) on random weights at the chosen geometry:
"sd15" is SD1.5 + motion module v2 with an SD1.5 ControlNet v1.1 / the v3 SparseCtrl RGB encoder;
"small" is the miniature-sized UNet of benchmarks/sample_speed.py with matching small ControlNets (for
CPU). Per case: the first call (compilation, reported apart), then `--rounds` timed calls (median).
The table's last column is the step time over the plain step's. The load average is printed: figures
from a loaded machine are not the claim.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._pinning import load_average, machine_line, pin_threads  # noqa: E402


def geometry(name: str):
    """(UNetConfig, MotionConfig, ControlNetConfig, SparseCtrl ControlNetConfig, its MotionConfig)."""
    from animatediff_jax.models import configs as c
    if name == "sd15":
        return c.SD15_UNET, c.MOTION_V2, c.SD15_CONTROLNET, c.SPARSECTRL_RGB, c.MOTION_SPARSECTRL
    blocks = dict(block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=128,
                  attention_head_dim=8, norm_num_groups=32,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"))
    unet = c.UNetConfig(up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), **blocks)
    motion = c.MotionConfig(num_attention_heads=8, max_seq_length=32, use_mid_block=True)
    net = c.ControlNetConfig(conditioning_embedding_out_channels=(16, 32, 96, 256), **blocks)
    sparse = dataclasses.replace(net, conditioning_channels=4, concat_conditioning_mask=True,
                                 use_simplified_condition_embedding=True, set_noisy_sample_input_to_zero=True,
                                 down_block_types=("CrossAttnDownBlockMotion",) * 2 + ("DownBlockMotion",))
    return unet, motion, net, sparse, dataclasses.replace(c.MOTION_SPARSECTRL, num_attention_heads=8)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--geometry", choices=("small", "sd15"), default="small")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="pixels (square)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    threads = pin_threads(args.threads)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.sampling.control import ControlArgs, ControlNet, sparse_condition
    from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
    from animatediff_jax.sampling.samplers import original_ddim

    dt = jnp.dtype(args.dtype)
    unet_cfg, motion, net_cfg, sparse_cfg, sparse_motion = geometry(args.geometry)
    f, lat = args.frames, args.size // 8
    text_dim = unet_cfg.cross_attention_dim

    def random_tree(module, *example, **kw):  # N(0, 0.02²) weights: timing does not depend on the values
        shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example, **kw))["params"]
        leaves, tree = jax.tree.flatten(shapes)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        return jax.tree.unflatten(tree, [(0.02 * jax.random.normal(k, s.shape)).astype(dt)
                                         for k, s in zip(keys, leaves)])

    unet = UNet3DConditionModel(unet_cfg, motion, dtype=dt, param_dtype=dt)
    x0, t0, e0 = jnp.zeros((1, 2, lat, lat, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, text_dim))
    unet_p = random_tree(unet, x0, t0, e0)
    cn = ControlNet.build("controlnet", net_cfg, None, {}, dtype=dt)
    sc = ControlNet.build("sparsectrl", sparse_cfg, sparse_motion, {}, dtype=dt)
    cn_p = random_tree(cn.network, x0, t0, e0, jnp.zeros((1, 2, lat * 8, lat * 8, 3)))
    sc_p = random_tree(sc.network, x0, t0, e0, jnp.zeros((1, 2, lat, lat, 4)), conditioning_mask=jnp.ones((1, 2)))
    sampler = original_ddim(25)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, f, lat, lat, 4)), jnp.float32)
    emb = jnp.asarray(rng.standard_normal((2, 77, text_dim)), dt)
    scales = jnp.ones((sampler.num_steps,), jnp.float32)
    video = jnp.asarray(rng.random((1, f, lat * 8, lat * 8, 3)), jnp.float32)
    keys = jnp.asarray(rng.standard_normal((1, 3, lat, lat, 4)), jnp.float32)
    cond, mask = sparse_condition(keys, [0, f // 2, f - 1], f)
    one = (cn, ControlArgs(cn_p, video, None, scales))
    cases = {"plain step": (), "1 ControlNet": (one,), "2 ControlNets": (one, one),
             "1 SparseCtrl (RGB)": ((sc, ControlArgs(sc_p, cond, mask, scales)),)}
    pipe = AnimateDiffPipeline(unet, unet_p, None, None, None, None, None)
    rows = []
    for name, controls in cases.items():
        step = pipe.step_function(sampler, True, None, tuple(c.network for c, _ in controls))
        control = tuple(a for _, a in controls)
        state = sampler.init_state(x)
        keys = jnp.zeros((1, 2), jnp.uint32)
        call = lambda: step(unet_p, x, state, np.int32(3), emb, jnp.float32(7.5), keys,  # noqa: E731
                            control)[0].block_until_ready()
        t = time.perf_counter()
        call()
        first = time.perf_counter() - t
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        rows.append((name, first, statistics.median(times), load_average()))
        print(f"{name}: first call {first:.1f} s, median {rows[-1][2] * 1e3:.1f} ms", flush=True)
    print(f"\n{machine_line(threads)}; {args.geometry} geometry, {f}x{args.size}x{args.size}, batch 1 with CFG, "
          f"{args.dtype}, {args.rounds} rounds")
    print("| case | first call s (compile) | step ms (median) | x plain step | load avg |")
    print("|---|---|---|---|---|")
    for name, first, med, load in rows:
        print(f"| {name} | {first:.1f} | {med * 1e3:.1f} | {med / rows[0][2]:.2f} | {load:.1f} |")


if __name__ == "__main__":
    main()
