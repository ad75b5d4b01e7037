"""Train-step throughput of the motion-module training step, and a TPU pod projection.

    python benchmarks/train_step.py                 # small config on this machine's default device
    python benchmarks/train_step.py --sd15-flops    # also count the paper's step (SD1.5 + v2, 256x256x16)

Measures, with pre-computed latents (the VAE is not in the step): step time, clips/s, FLOPs per step
(XLA cost analysis of the compiled step), achieved TFLOP/s, MFU where the device's peak is known,
and the step's device memory (XLA memory analysis: arguments + outputs + temporaries). `--sd15-flops`
traces (does not run) the real SD1.5 + v2 training step at 256x256x16 and prints XLA's FLOP count
per clip, which the pod projection uses.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from animatediff_jax.models.configs import MOTION_V2, SD15_UNET, MotionConfig, UNetConfig
from animatediff_jax.models.init import example_inputs, random_params
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training.metrics import compiled_flops, device_peak_tflops
from animatediff_jax.training.optimizer import make_optimizer
from animatediff_jax.training.step import ApplyFunctions, create_train_state, make_loss_and_grads, make_train_step
from animatediff_jax.training.trainable import split
from animatediff_jax.xla_options import jit

SMALL = UNetConfig(block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=128,
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   attention_head_dim=8, norm_num_groups=32)
SMALL_MOTION = MotionConfig(num_attention_heads=8, max_seq_length=32)


def build_step(unet_cfg, motion_cfg, dtype, remat):
    unet = UNet3DConditionModel(unet_cfg, motion_cfg, dtype=dtype, param_dtype=jnp.float32, remat=remat)
    models = ApplyFunctions(unet=lambda p, z, t, c: unet.apply({"params": p}, z, t, c),
                            encode_video=None, encode_text=lambda p, ids: p["embeddings"][ids])
    lg = make_loss_and_grads(models, NoiseSchedule.preset("B").alphas_cumprod, jnp.zeros((77,), jnp.int32))
    opt = make_optimizer()
    return unet, opt, make_train_step(lg, opt)


def inputs(unet, unet_cfg, batch, frames, latent, abstract):
    """(trainable, frozen, batch) as the trainer passes them: trainable params float32, frozen ones in the
    compute dtype (the trainer's `mixed_precision_training`), on the default device (abstract: shapes only)."""
    z = jnp.zeros((batch, frames, latent, latent, 4))
    if abstract:
        params = jax.eval_shape(lambda: unet.init(jax.random.PRNGKey(0), *example_inputs(unet)))["params"]
    else:  # numpy random weights: the jitted init set off XLA's slow-compile alarm at SD1.5 size on an H200
        params = random_params(unet, 0, *example_inputs(unet))
    trainable, frozen_unet = split(params, ["motion_modules."])
    emb = jnp.zeros((8, unet_cfg.cross_attention_dim))
    frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, unet.dtype) if abstract else x.astype(unet.dtype),
                          {"unet": frozen_unet, "vae": {}, "text_encoder": {"embeddings": emb}})
    batch_ = {"latents": z, "input_ids": jnp.zeros((batch, 77), jnp.int32)}
    if abstract:
        return trainable, frozen, batch_
    # on the device once: host (numpy) arguments are copied to the device at every call (measured: 74 ms of
    # H2D copies in each 231 ms SD1.5 + v2 step on an H200 before this)
    return jax.device_put((trainable, frozen, batch_))


def compile_and_time(unet_cfg, motion_cfg, batch, frames, latent, steps, dtype, remat):
    """Compile the train step for these settings and time `steps` calls after a warm-up call.

    Returns (compiled, run, compile_s, step_s): `run()` calls the compiled step once more on the same
    inputs and waits for it (profiling), seconds are wall-clock."""
    unet, opt, step = build_step(unet_cfg, motion_cfg, dtype, remat)
    trainable, frozen, b = inputs(unet, unet_cfg, batch, frames, latent, abstract=False)
    state = create_train_state(trainable, opt, 0)
    t0 = time.perf_counter()
    compiled = jit(step, donate_argnums=0).lower(state, frozen, b).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, frozen, b)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, frozen, b)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps

    def run():  # the state was donated: step from the latest one
        nonlocal state
        state, metrics = compiled(state, frozen, b)
        jax.block_until_ready(metrics)
    return compiled, run, compile_s, step_s


def measure(batch, frames, latent, steps, dtype, remat):
    compiled, _, compile_s, dt = compile_and_time(SMALL, SMALL_MOTION, batch, frames, latent, steps, dtype, remat)
    flops = compiled_flops(compiled)
    mem = compiled.memory_analysis()
    mem_bytes = None if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                          + mem.temp_size_in_bytes)
    return dict(step_s=dt, clips_s=batch / dt, flops=flops, compile_s=compile_s, mem=mem_bytes)


def step_flops(unet_cfg, motion_cfg, batch, frames, latent, dtype=jnp.bfloat16):
    """XLA's FLOP count of one training step without rematerialisation (the model FLOPs that MFU counts),
    traced with abstract params: nothing is allocated or run, so it works on CPU for any config."""
    unet, opt, step = build_step(unet_cfg, motion_cfg, dtype, False)
    trainable, frozen, b = inputs(unet, unet_cfg, batch, frames, latent, abstract=True)
    state = jax.eval_shape(lambda p: create_train_state(p, opt, 0), trainable)
    analysis = jit(step).lower(state, frozen, b).cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--sd15-flops", action="store_true")
    args = ap.parse_args()
    dev = jax.devices()[0]
    r = measure(args.batch, args.frames, args.latent, args.steps, jnp.dtype(args.dtype), args.remat)
    peak = device_peak_tflops(dev)
    tflops = r["flops"] / r["step_s"] / 1e12 if r["flops"] else float("nan")
    print(f"device: {dev.device_kind} ({jax.device_count()} device(s)), dtype {args.dtype}, remat {args.remat}")
    print(f"config: UNet {SMALL.block_out_channels} x{SMALL.layers_per_block} + motion, batch {args.batch}, "
          f"{args.frames} frames, {args.latent}x{args.latent} latents (pre-computed)")
    print("| step (s) | clips/s | GFLOP/step | TFLOP/s | MFU | step memory (MiB) | compile (s) |")
    print("|---|---|---|---|---|---|---|")
    mfu = f"{tflops / peak:.1%}" if peak else "n/a (no known peak)"
    mem = f"{r['mem'] / 2**20:.0f}" if r["mem"] else "n/a"
    print(f"| {r['step_s']:.3f} | {r['clips_s']:.2f} | {r['flops'] / 1e9:.1f} | {tflops:.3f} | {mfu} | {mem} | "
          f"{r['compile_s']:.1f} |")
    if args.sd15_flops:
        per_clip = step_flops(SD15_UNET, MOTION_V2, 1, 16, 256 // 8)
        print(f"SD1.5 + v2 motion module, 256x256x16, train step: {per_clip / 1e12:.2f} TFLOP per clip (XLA count)")
        for mfu_ in (0.35, 0.45, 0.55):
            print(f"  TPU v5p-128 (64 chips x 459 TFLOP/s bf16) at {mfu_:.0%} MFU: "
                  f"{64 * 459e12 * mfu_ / per_clip:.0f} clips/s")


if __name__ == "__main__":
    main()
