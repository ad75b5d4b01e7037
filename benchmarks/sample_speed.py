"""Sampling speed: animatediff_jax vs diffusers' AnimateDiffPipeline, same machine, config and steps.

    python benchmarks/sample_speed.py                    # CPU: small config, float32, both implementations
    python benchmarks/sample_speed.py --config sd15      # GPU: SD1.5 + motion module v2, 16x512x512, 25 DDIM
                                                         #      steps, CFG; random weights; ours bf16 vs diffusers
                                                         #      fp16 + SDPA; peak memory, fraction of matmul peak

Both pipelines get the same prompts, latents, scheduler (DDIM) and number of steps; timings are the
median of `--repeats` runs after one warm-up run (ours: the warm-up includes XLA compilation,
reported separately). On the small config both run the same random weights (a diffusers folder
written by this script and loaded by ours). At the SD1.5 config each side builds its own random
weights (speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

SMALL = dict(frames=16, height=128, width=128, steps=10)
SD15 = dict(frames=16, height=512, width=512, steps=25)


def _timed(fn, repeats):
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def small_models(folder: str):
    """A small random SD1.x base + MotionAdapter (diffusers), written to `folder`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from animatediff_jax.tiny_models import write_byte_tokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=128,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=8, norm_num_groups=32, sample_size=16)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=32)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                        num_attention_heads=2, eos_token_id=513, pad_token_id=513, bos_token_id=512))
    adapter = MotionAdapter(block_out_channels=(64, 128, 128), motion_layers_per_block=1,
                            motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32)
    tok = CLIPTokenizer.from_pretrained(write_byte_tokenizer(os.path.join(folder, "_tok")))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1,
                          clip_sample=False)
    for name, part in dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched).items():
        part.save_pretrained(os.path.join(folder, "base", name))
    adapter.save_pretrained(os.path.join(folder, "adapter"))
    return unet, vae, text, tok, adapter, sched


def sd15_diffusers(device: str):
    """diffusers AnimateDiffPipeline at the SD1.5 + v2 configs, random weights, fp16, SDPA."""
    import torch
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from animatediff_jax.tiny_models import write_byte_tokenizer
    tok = CLIPTokenizer.from_pretrained(write_byte_tokenizer(tempfile.mkdtemp()))
    pipe = AnimateDiffPipeline(
        vae=AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                          down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                                  num_hidden_layers=12, projection_dim=768)), tokenizer=tok,
        unet=UNet2DConditionModel(cross_attention_dim=768), motion_adapter=MotionAdapter(),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1,
                                clip_sample=False))
    return pipe.to(device, torch.float16)


def run_diffusers(pipe, latents, cfg, device):
    import torch
    pipe.set_progress_bar_config(disable=True)
    lat = torch.from_numpy(latents).to(device, pipe.unet.dtype)

    def call():
        pipe(prompt=["a cat walking"], negative_prompt=[""], num_frames=cfg["frames"], height=cfg["height"],
             width=cfg["width"], num_inference_steps=cfg["steps"], guidance_scale=7.5, latents=lat.clone(),
             output_type="np")
        if device == "cuda":
            torch.cuda.synchronize()
    return call


def matmul_peak_tflops() -> float:
    """Measured bf16 matmul throughput of the default JAX device (8192^3, median of 10)."""
    import jax
    import jax.numpy as jnp
    n = 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    ts = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e12


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=("small", "sd15"), default="small")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--ours-only", action="store_true", help="skip diffusers (time animatediff_jax alone)")
    p.add_argument("--progress", action="store_true", help="ours with its per-step progress bar")
    p.add_argument("--decode-chunk", type=int, help="ours: frames decoded at once (default: the pipeline's)")
    args = p.parse_args(argv)

    import jax
    import torch
    from animatediff_jax import loading
    from animatediff_jax.sampling.pipeline import (AnimateDiffPipeline, enable_compilation_cache,
                                                   from_diffusers_latents)
    torch.set_num_threads(args.threads)
    enable_compilation_cache()
    gpu = jax.default_backend() == "gpu"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = SMALL if args.config == "small" else SD15
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 4, cfg["frames"], cfg["height"] // 8, cfg["width"] // 8), np.float32)
    rows = []

    if args.config == "small":
        folder = tempfile.mkdtemp()
        unet, vae, text, tok, adapter, sched = small_models(folder)
        from diffusers import AnimateDiffPipeline as Ref
        ref = Ref(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, motion_adapter=adapter, scheduler=sched)
        ours = loading.load_pipeline(os.path.join(folder, "base"), motion_module=os.path.join(folder, "adapter"),
                                        scheduler_config="base", motion_input_norm="joint", dtype="float32",
                                        cache_dir=os.path.join(folder, "cache"))
        ref_dtype = "float32"
    else:
        from animatediff_jax.tiny_models import write_byte_tokenizer
        from animatediff_jax.models.configs import MOTION_V2, SD15_TEXT, SD15_UNET, SD15_VAE
        from animatediff_jax.tokenizer import PromptTokenizer
        ref = sd15_diffusers(device)
        ours = AnimateDiffPipeline.random(SD15_UNET, MOTION_V2, SD15_VAE, SD15_TEXT,
                                          PromptTokenizer.from_pretrained(write_byte_tokenizer(tempfile.mkdtemp())),
                                          dtype="bfloat16" if gpu else "float32", attention_impl="cudnn" if gpu else "xla")
        ref_dtype = "float16"

    if args.decode_chunk:
        ours.decode_chunk_size = args.decode_chunk

    def ours_call():
        r = ours(["a cat walking"], [""], seeds=[0], width=cfg["width"], height=cfg["height"], frames=cfg["frames"],
                 steps=cfg["steps"], guidance_scale=7.5, latents=from_diffusers_latents(latents),
                 progress=args.progress)
        return r.frames

    first, ours_t = _timed(ours_call, args.repeats)
    rows.append(("animatediff_jax", ours.description.get("dtype"), ours_t, first - ours_t))
    if not args.ours_only:
        ref_first, ref_t = _timed(run_diffusers(ref, latents, cfg, device), args.repeats)
        rows.append(("diffusers AnimateDiffPipeline", ref_dtype, ref_t, ref_first - ref_t))

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax backend "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind}), torch threads {torch.get_num_threads()}")
    print(f"config: {args.config}, {cfg['frames']} frames x {cfg['height']}x{cfg['width']}, {cfg['steps']} DDIM "
          f"steps, CFG 7.5, batch 1, VAE decode included; median of {args.repeats} after a warm-up\n")
    print("| implementation | dtype | seconds / video | warm-up overhead (compile) s |")
    print("|---|---|---|---|")
    for name, dt, t, c in rows:
        print(f"| {name} | {dt} | {t:.2f} | {c:.1f} |")
    if not args.ours_only:
        print(f"\nspeed-up of animatediff_jax over diffusers: {ref_t / ours_t:.2f}x")
    if gpu:
        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0) / 2**30
        print(f"peak GPU memory (ours): {peak:.2f} GiB; diffusers: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        tflops = 928.0  # the run's FLOPs (SD1.5 + v2, 16x512x512, 25 steps, CFG), from the issue
        peak_tflops = matmul_peak_tflops()
        print(f"measured bf16 matmul peak {peak_tflops:.0f} TFLOP/s; achieved "
              f"{tflops / ours_t:.0f} TFLOP/s = {tflops / ours_t / peak_tflops:.0%} of peak")


if __name__ == "__main__":
    main()
