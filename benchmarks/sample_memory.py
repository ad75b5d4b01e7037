"""Memory of the SD1.5 sampler's compiled programs: XLA's compiled-buffer estimate, no weights needed.

    python benchmarks/sample_memory.py          # bf16 + f32: step (chunked, xla attention), decode chunks 1..16
    python benchmarks/sample_memory.py --dtypes bfloat16 --attention chunked --decode-chunks 2 4 8

Lowers and compiles, from shapes alone (jax.ShapeDtypeStruct; nothing is allocated), the programs of
a 16x512x512 SD1.5 + motion module v2 sample with classifier-free guidance: one denoising
step (`AnimateDiffPipeline.step_function`, batch 1 doubled for CFG) per attention implementation,
and the VAE decode of 16 frames (`decode_video`) per decode chunk size. For each it prints XLA's
`compiled.memory_analysis()`: argument, output and temporary bytes. These are estimates of the
buffers of the program XLA:CPU compiled on this machine, not a GPU measurement (XLA:GPU fuses and
schedules differently; cuDNN attention cannot be compiled here).

The last column estimates the sample's peak while that program runs: all weights resident (UNet +
motion module, VAE, text encoder, as the pipeline holds them) plus the program's temporaries, its
outputs and its non-weight inputs (latents, embeddings). Caveat: XLA:CPU runs bfloat16 matmuls and
convolutions in float32, so its bfloat16 programs also count float32 copies of weights and
activations among their temporaries; the float32 rows bound the activations from above.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 2**30


def _nbytes(tree) -> int:
    import jax
    import numpy as np
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512, help="width = height")
    p.add_argument("--dtypes", nargs="*", default=["bfloat16", "float32"], choices=("bfloat16", "float32"))
    p.add_argument("--attention", nargs="*", default=["chunked", "xla"], choices=("xla", "chunked"))
    p.add_argument("--decode-chunks", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from animatediff_jax.models import vae as vae_lib
    from animatediff_jax.models.clip_text import CLIPTextModel
    from animatediff_jax.models.configs import MOTION_V2, SD15_TEXT, SD15_UNET, SD15_VAE
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
    from animatediff_jax.sampling.samplers import original_ddim
    from animatediff_jax.xla_options import jit

    f, lat = args.frames, args.size // 8
    sds = jax.ShapeDtypeStruct
    shapes = lambda m, *a: jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), *a))["params"]  # noqa: E731
    x = sds((1, f, lat, lat, 4), jnp.float32)  # the pipeline's latents are float32 whatever the model's dtype
    rows, weights = [], {}
    for dtype in args.dtypes:
        dt = jnp.dtype(dtype)
        kw = dict(dtype=dt, param_dtype=dt)
        vae = vae_lib.AutoencoderKL(SD15_VAE, **kw)
        vae_p = shapes(vae, jnp.zeros((1, 16, 16, 3)))
        text_p = shapes(CLIPTextModel(SD15_TEXT, **kw), jnp.zeros((1, 4), jnp.int32))
        unet_p = None
        for impl in args.attention:
            unet = UNet3DConditionModel(SD15_UNET, MOTION_V2, attention_impl=impl, **kw)
            unet_p = unet_p or shapes(unet, jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 768)))
            step = AnimateDiffPipeline(unet, unet_p, vae, vae_p, None, text_p, None).step_function(
                original_ddim(25), cfg=True, context=None)
            emb = sds((2, 77, 768), dt)
            t0 = time.perf_counter()
            compiled = step.lower(unet_p, x, (), sds((), jnp.int32), emb, sds((), jnp.float32),
                                  sds((1, 2), jnp.uint32)).compile()
            rows.append((dtype, f"denoise step, {impl} attention (CFG: batch 2)", compiled.memory_analysis(),
                         time.perf_counter() - t0, _nbytes([x, emb])))
            print(dtype, rows[-1][1], f"compiled in {rows[-1][3]:.0f} s", flush=True)
        weights[dtype] = (_nbytes(unet_p), _nbytes(vae_p), _nbytes(text_p))
        for chunk in args.decode_chunks:
            t0 = time.perf_counter()
            decode = jit(vae_lib.decode_video, static_argnames=("vae", "chunk_size"))
            compiled = decode.lower(vae, vae_p, x, chunk_size=chunk).compile()
            rows.append((dtype, f"VAE decode of {f} frames, chunk {chunk}", compiled.memory_analysis(),
                         time.perf_counter() - t0, _nbytes(x)))
            print(dtype, rows[-1][1], f"compiled in {rows[-1][3]:.0f} s", flush=True)

    print(f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, backend {jax.default_backend()}; SD1.5 + motion module v2, "
          f"{f}x{args.size}x{args.size}, batch 1 with CFG. XLA:CPU compiled-buffer estimates "
          "(compiled.memory_analysis()), not GPU measurements.")
    for dtype, (u, v, t) in weights.items():
        print(f"weights ({dtype}): UNet + motion module {u / GIB:.2f} GiB, VAE {v / GIB:.2f} GiB, "
              f"text encoder {t / GIB:.2f} GiB; total {(u + v + t) / GIB:.2f} GiB")
    print("\n| dtype | program | arguments GiB | outputs GiB | temporaries GiB | compile s | "
          "est. sample peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for dtype, name, m, secs, inputs in rows:
        peak = sum(weights[dtype]) + inputs + m.output_size_in_bytes + m.temp_size_in_bytes
        print(f"| {dtype} | {name} | {m.argument_size_in_bytes / GIB:.2f} | {m.output_size_in_bytes / GIB:.2f} | "
              f"{m.temp_size_in_bytes / GIB:.2f} | {secs:.0f} | {peak / GIB:.2f} |")


if __name__ == "__main__":
    main()
