"""Sampling speed on CPU: animatediff_jax vs diffusers' AnimateDiffPipeline, interleaved round by round.

    PYTHONPATH=. python benchmarks/sample_speed.py                       # 16x64², 16x128², frames 8/16/32
    PYTHONPATH=. python benchmarks/sample_speed.py --cases 16x128 --rounds 5 --threads 2

Both pipelines run the same small random SD1.x + MotionAdapter (a diffusers folder written by this
script, loaded by ours with `motion_input_norm="joint"` so both compute the same function), the same
prompts, initial latents, DDIM scheduler and steps, CFG 7.5 as one doubled batch, VAE decode
included, float32. The process is pinned to `--threads` cores and torch gets as many threads, so
both use the same cores. Per case: one first call each (ours: XLA compilation, no persistent cache;
reported separately), then `--rounds` rounds, each timing ours then diffusers; the table gives medians
and the median of the per-round ratios (diffusers s / ours s: > 1 = ours faster). Cases `32x64w` and
`32x64m` sample 32 frames in context windows of 16 frames, stride 4: diffusers with `enable_free_noise`
(which windows only the motion modules' attentions), ours with `ContextOptions(scope="unet")` (the
whole UNet per window: more work per frame, less memory) for `w` and `scope="motion"` (the same
algorithm as diffusers') for `m`. The load average during each case is
printed: figures from a loaded machine are not the claim. GPU: benchmarks/gpu.sh.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._pinning import load_average, machine_line, pin_threads  # noqa: E402

DEFAULT_CASES = ("16x64", "16x128", "8x64", "32x64w", "32x64m")


def small_models(folder: str):
    """A small random SD1.x base + MotionAdapter (diffusers), written to `folder`/base and /adapter."""
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


def parse_case(case: str) -> tuple[int, int, str | None]:
    """'16x128' -> (16 frames, 128 px square, no windows); a trailing 'w' / 'm' = context windows 16/4
    of scope "unet" / "motion"."""
    m = re.fullmatch(r"(\d+)x(\d+)([wm]?)", case)
    if not m:
        raise SystemExit(f"error: --cases: {case!r} is not FRAMESxSIZE[w|m] (e.g. 16x128, 32x64w, 32x64m)")
    return int(m[1]), int(m[2]), {"w": "unet", "m": "motion"}.get(m[3])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                   help="FRAMESxSIZE[w|m]: w / m = context windows 16/4 of scope unet / motion")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--attention", default="auto", help="ours: attention implementation")
    args = p.parse_args(argv)
    cases = [parse_case(c) for c in args.cases]
    threads = pin_threads(args.threads)

    import numpy as np
    import torch
    from diffusers import AnimateDiffPipeline as Reference
    from animatediff_jax import loading
    from animatediff_jax.sampling.context_windows import ContextOptions
    from animatediff_jax.sampling.pipeline import from_diffusers_latents
    torch.set_num_threads(threads)
    folder = tempfile.mkdtemp()
    unet, vae, text, tok, adapter, sched = small_models(folder)
    ref = Reference(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, motion_adapter=adapter, scheduler=sched)
    ref.set_progress_bar_config(disable=True)
    ours = loading.load_pipeline(os.path.join(folder, "base"), motion_module=os.path.join(folder, "adapter"),
                                    scheduler_config="base", motion_input_norm="joint", dtype="float32",
                                    attention_impl=args.attention, cache_dir=os.path.join(folder, "cache"))
    rows = []
    for frames, size, windows in cases:
        latents = np.random.default_rng(0).standard_normal((1, 4, frames, size // 8, size // 8), np.float32)
        if windows:
            ref.enable_free_noise(context_length=16, context_stride=4, weighting_scheme="pyramid")
        elif ref.free_noise_enabled:
            ref.disable_free_noise()
        context = ContextOptions(length=16, stride=4, weighting="pyramid", scope=windows) if windows else None

        def ours_call():
            ours(["a cat walking"], [""], seeds=[0], width=size, height=size, frames=frames, steps=args.steps,
                 guidance_scale=7.5, latents=from_diffusers_latents(latents), context=context, progress=False)

        def ref_call():
            ref(prompt="a cat walking", negative_prompt="", num_frames=frames, height=size, width=size,
                num_inference_steps=args.steps, guidance_scale=7.5, latents=torch.from_numpy(latents),
                output_type="np")

        load_before = load_average()
        first = {}
        for name, call in (("ours", ours_call), ("diffusers", ref_call)):
            t0 = time.perf_counter()
            call()
            first[name] = time.perf_counter() - t0
        times = {"ours": [], "diffusers": []}
        for _ in range(args.rounds):
            for name, call in (("ours", ours_call), ("diffusers", ref_call)):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        ratios = [d / o for o, d in zip(times["ours"], times["diffusers"])]
        rows.append((f"{frames} × {size}²" + (f" (windows 16/4, ours scope {windows})" if windows else ""), times,
                     ratios, first,
                     (load_before + load_average()) / 2))
        print(f"done {frames}x{size} {windows or ''}: ours {times['ours']}, diffusers {times['diffusers']}",
              file=sys.stderr, flush=True)

    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line(threads)}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"small random SD1.x + MotionAdapter, float32, {args.steps} DDIM steps, CFG 7.5, batch 1, decode "
          f"included; ours attention={args.attention}; {args.rounds} interleaved rounds after one first call each\n")
    print("| frames × size | ours s/video | diffusers s/video | diffusers/ours (median of rounds) | per-round ratios "
          "| first call s: ours / diffusers | load avg |")
    print("|---|---|---|---|---|---|---|")
    for label, times, ratios, first, load in rows:
        print(f"| {label} | {statistics.median(times['ours']):.2f} | {statistics.median(times['diffusers']):.2f} | "
              f"{statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} | "
              f"{first['ours']:.1f} / {first['diffusers']:.1f} | {load:.1f} |")


if __name__ == "__main__":
    main()
