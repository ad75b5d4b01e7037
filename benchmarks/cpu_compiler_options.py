"""XLA's default CPU options vs the package's (`animatediff_jax.xla_options`), interleaved in one process.

    PYTHONPATH=. python benchmarks/cpu_compiler_options.py --threads 2 --rounds 5

Programs: one 3x3 convolution, the `chunked` self-attention at SD1.5's first level (2 rows x 4096
tokens x 8 heads of 40), and the UNet3D + motion modules forward of `sample_speed.py`'s small
SD1.x config (random weights) on a CFG batch of 2 x 16 frames at 16x16 and 32x32 latents (128² and
256² videos), float32. Each program is compiled twice from the same lowering, with XLA's defaults and
with `xla_options.compiler_options()`; each round times both, one after the other. The table gives
medians, the median of the per-round ratios (default s / ours s: > 1 = the package's options are
faster), the largest output difference and the load average during the run. `--baseline OPTION=VALUE`
compiles the baseline with other options than XLA's defaults (e.g. an earlier choice of the package's).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._pinning import load_average, machine_line, pin_threads  # noqa: E402


def programs():
    """name -> (jitted function, arguments)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from animatediff_jax.models.attention import attention
    from animatediff_jax.models.configs import MotionConfig, UNetConfig
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    rng = np.random.default_rng(0)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    out = {"conv 3x3, 32x16x16x192 -> 64": (conv, (rng.standard_normal((32, 16, 16, 192), np.float32),
                                                   rng.standard_normal((3, 3, 192, 64), np.float32) * 0.05))}
    q, k, v = (rng.standard_normal((2, 4096, 8, 40), np.float32) for _ in range(3))
    chunked = jax.jit(lambda q, k, v: attention(q, k, v, implementation="chunked"))
    out["chunked attention, SD1.5 first level (2, 4096, 8, 40)"] = (chunked, (q, k, v))
    unet = UNet3DConditionModel(
        UNetConfig(block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=128,
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   attention_head_dim=8, norm_num_groups=32),
        MotionConfig(num_attention_heads=8, max_seq_length=32, norm_num_groups=32, input_norm="joint"))
    t, emb = np.array([999, 500]), rng.standard_normal((2, 77, 128), np.float32)
    params = jax.jit(unet.init)(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 16, 4)), t, emb)
    forward = jax.jit(unet.apply)
    for lat in (16, 32):
        x = rng.standard_normal((2, 16, lat, lat, 4), np.float32)
        out[f"UNet3D forward, 2 x 16 x {lat}x{lat} latents"] = (forward, (params, x, t, emb))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--baseline", action="append", default=[], metavar="OPTION=VALUE",
                   help="compile the baseline with these XLA options instead of the defaults (repeatable), e.g. "
                        "xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    args = p.parse_args(argv)
    baseline = dict(o.split("=", 1) for o in args.baseline)
    threads = pin_threads(args.threads)
    import jax
    import numpy as np
    from animatediff_jax.xla_options import compiler_options
    options = compiler_options()
    if options is None:
        raise SystemExit(f"error: no package options for backend {jax.default_backend()} with this jaxlib")
    rows = []
    for name, (fn, call_args) in programs().items():
        lowered = fn.lower(*call_args)
        compiled = {"default": lowered.compile(compiler_options=baseline or None),
                    "package": lowered.compile(compiler_options=options)}
        outs = {k: np.asarray(jax.tree.leaves(c(*call_args))[0]) for k, c in compiled.items()}
        diff = float(np.abs(outs["default"] - outs["package"]).max())
        load_before = load_average()
        times = {k: [] for k in compiled}
        for _ in range(args.rounds):
            for k, c in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(*call_args))
                times[k].append(time.perf_counter() - t0)
        ratios = [d / o for d, o in zip(times["default"], times["package"])]
        rows.append((name, times, ratios, diff, (load_before + load_average()) / 2))
        print(f"done {name}", file=sys.stderr, flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line(threads)}")
    print(f"package options: {options}; 'default' = {baseline or 'XLA defaults'}; float32; {args.rounds} "
          "interleaved rounds after one call each\n")
    print("| program | default s | package s | default/package (median of rounds) | per-round ratios "
          "| max abs diff | load avg |")
    print("|---|---|---|---|---|---|---|")
    for name, times, ratios, diff, load in rows:
        print(f"| {name} | {statistics.median(times['default']):.3f} | {statistics.median(times['package']):.3f} | "
              f"{statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} | {diff:.1e} | {load:.1f} |")


if __name__ == "__main__":
    main()
