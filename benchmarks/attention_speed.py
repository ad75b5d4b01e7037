"""Attention kernels x sequence length on this backend, interleaved with torch's SDPA (the reference).

    PYTHONPATH=. python benchmarks/attention_speed.py                     # CPU: 1024/2048/4096 tokens
    PYTHONPATH=. python benchmarks/attention_speed.py --tokens 256 1024 --rows 32 --head-dim 8

Self-attention q, k, v of shape (rows, tokens, heads, head_dim) — rows = batch·frames (CFG doubles
it), SD1.5's first level has 8 heads of 40. Each round times every kernel in turn (so load changes
hit all of them alike), each over the same number of back-to-back calls (~0.3 s of torch: a single
cold call of a short kernel mostly measures waking the thread pool); the table gives the median seconds and the median over rounds of each
kernel's time / torch's time in the same round (< 1 = faster than torch). The load average before
and after is printed: figures from a loaded machine are not the claim.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._pinning import load_average, machine_line, pin_threads  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--rows", type=int, default=2, help="batch·frames")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--kernels", nargs="+", default=None,
                   help="default: every kernel that runs here; KERNEL@defaults compiles KERNEL with XLA's default "
                        "options instead of the package's (animatediff_jax/xla_options.py)")
    args = p.parse_args(argv)
    threads = pin_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from animatediff_jax.models.attention import attention, select_implementation
    from animatediff_jax.xla_options import jit
    torch.set_num_threads(threads)
    backend = jax.default_backend()
    kernels = args.kernels or {"cpu": ["xla", "chunked", "chunked@defaults"], "gpu": ["xla", "chunked", "cudnn"],
                               "tpu": ["xla", "chunked", "tpu_flash"]}[backend]
    dtype = jnp.float32 if backend == "cpu" else jnp.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load_before = load_average()
    results = {}  # (kernel, tokens) -> list of seconds; "torch" is the reference
    compile_s = {}
    for tokens in args.tokens:
        rng = np.random.default_rng(0)
        qkv = [rng.standard_normal((args.rows, tokens, args.heads, args.head_dim), np.float32) for _ in range(3)]
        jq = [jnp.asarray(t, dtype) for t in qkv]
        tq = [torch.from_numpy(t).transpose(1, 2).to(device, torch.float32 if backend == "cpu" else torch.float16)
              for t in qkv]
        fns = {k: (jax.jit if k.endswith("@defaults") else jit)(
            lambda q, kk, v, impl=k.removesuffix("@defaults"): attention(q, kk, v, implementation=impl))
            for k in kernels}
        calls = {k: (lambda f=f: f(*jq).block_until_ready()) for k, f in fns.items()}

        def torch_call():
            torch.nn.functional.scaled_dot_product_attention(*tq)
            if device == "cuda":
                torch.cuda.synchronize()
        calls["torch"] = torch_call
        for name, call in calls.items():  # warm-up (compilation) outside the rounds
            t0 = time.perf_counter()
            call()
            compile_s[name, tokens] = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch_call()
        # Each round times `repeats` back-to-back calls per kernel (the same count for all, ~0.3 s of
        # torch), so short kernels are not timed on one cold call.
        repeats = max(1, round(0.3 / (time.perf_counter() - t0)))
        for _ in range(args.rounds):
            for name, call in calls.items():
                t0 = time.perf_counter()
                for _ in range(repeats):
                    call()
                results.setdefault((name, tokens), []).append((time.perf_counter() - t0) / repeats)
    load_after = load_average()

    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line(threads)}, torch {torch.__version__}")
    print(f"self-attention ({args.rows}, L, {args.heads}, {args.head_dim}), {jnp.dtype(dtype).name}, "
          f"{args.rounds} interleaved rounds (each: back-to-back calls of ~0.3 s of torch per kernel, per-call time); load average {load_before:.1f} before, {load_after:.1f} after")
    print("'auto' picks: " + ", ".join(
        f"L={t}: {select_implementation(backend, dtype, t, t, args.head_dim, getattr(jax.devices()[0], 'compute_capability', None))}"
        for t in args.tokens) + "\n")
    print("| kernel | " + " | ".join(f"L={t}: median s (x torch)" for t in args.tokens) + " |")
    print("|---|" + "---|" * len(args.tokens))
    for name in [*kernels, "torch"]:
        cells = []
        for t in args.tokens:
            ts, ref = results[name, t], results["torch", t]
            ratio = statistics.median(a / b for a, b in zip(ts, ref))
            cells.append(f"{statistics.median(ts):.3f} ({ratio:.2f}x)")
        label = "torch SDPA" if name == "torch" else name
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nall rounds (s): " + "; ".join(
        f"{n} L={t}: {[round(x, 3) for x in ts]}" for (n, t), ts in results.items()))


if __name__ == "__main__":
    main()
