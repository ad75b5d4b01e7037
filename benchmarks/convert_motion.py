"""Benchmark: convert a full-size AnimateDiff v2 motion module, ours vs diffusers' `from_single_file`.

    python benchmarks/convert_motion.py [--dtypes fp16 fp32] [--workdir /tmp/motion_bench] [--keep]

Writes an original-format v2 motion module (`mm_sd_v15_v2` layout: 588 tensors incl. position
encodings, ~453 M parameters: ~0.9 GB fp16 / ~1.8 GB fp32) as `.safetensors` with random weights,
then measures each mode in a fresh subprocess, modes interleaved round by round (`--repeats`;
medians reported): seconds of the work after imports (JAX's CPU backend started), "built" when the
call returns and "touched" after one element per 4 KiB page of every parameter has been read
(memory-mapped loads read nothing until then); peak RSS is VmHWM of the process. All modes output
float32 params (a float16 file is cast), as diffusers' default does.

  ours_load      load_motion_module(file): Flax params; from an fp32 file zero-copy views of the
                 mapped file (kernels transposed as views), from fp16 one cast pass
  ours_device    load_motion_module(file, device=True): each leaf `jax.device_put` (the one copy)
  ours_convert   `python -m convert motion` work: load_motion_module + save_params to .safetensors
  diffusers      MotionAdapter.from_single_file(file, config=<local config folder>)

Target (issue #3): peak RSS under 1.5x the file size; faster than diffusers. Files are deleted
afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_module(path: str, config_dir: str, dtype: str) -> int:
    """A random v2 motion module in the original format; returns the file size in bytes."""
    import numpy as np
    from diffusers import MotionAdapter
    from safetensors.numpy import save_file

    from convert.motion import diffusers_key_to_original, motion_adapter_key_shapes, sinusoid
    MotionAdapter().save_config(config_dir)  # SD1.5 v2 defaults; config only
    rng = np.random.default_rng(0)
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    tensors = {}
    for key, shape in motion_adapter_key_shapes((320, 640, 1280, 1280), 2, True).items():
        tensors[diffusers_key_to_original(key)] = (rng.standard_normal(shape, np.float32) * 0.02).astype(np_dtype)
        if key.endswith((".attn1.to_q.weight", ".attn2.to_q.weight")):
            pe_key = diffusers_key_to_original(key).replace(".to_q.weight", ".pos_encoder.pe")
            tensors[pe_key] = sinusoid(32, shape[0]).astype(np_dtype)
    save_file(tensors, path)
    return os.path.getsize(path)


def touch(arrays) -> None:
    """Read one element per 4 KiB page of every array (in its memory order: no copy of views)."""
    import numpy as np
    for a in arrays:
        a = np.asarray(a)
        a = a.transpose(np.argsort(a.strides, kind="stable")[::-1])
        int(a.reshape(-1).view(np.uint8)[::4096].sum())


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def run_one(mode: str, path: str, config_dir: str, out: str) -> dict:
    """Runs inside a fresh subprocess: imports first, then the timed work."""
    if mode == "diffusers":
        import torch  # noqa: F401
        from diffusers import MotionAdapter
    else:
        import jax
        from animatediff_jax.params import flatten

        from animatediff_jax.checkpoint import save_params
        from convert.motion import load_motion_module, motion_metadata
        jax.device_put(0).block_until_ready()
    base = peak_rss()
    start = time.perf_counter()
    if mode == "diffusers":
        arrays = [p.detach().numpy() for p in MotionAdapter.from_single_file(path, config=config_dir).state_dict().values()]
    else:
        mm = load_motion_module(path, device=True if mode == "ours_device" else None)
        if mode == "ours_convert":
            save_params(out, mm.params, config=mm.config, source="benchmark", metadata=motion_metadata(mm))
        arrays = list(flatten(mm.params).values())
    built = time.perf_counter() - start
    if mode != "ours_convert":
        touch(arrays)
    return {"built": built, "seconds": time.perf_counter() - start, "peak_rss": peak_rss(), "rss_after_imports": base}


def measure(mode: str, path: str, config_dir: str, out: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, __file__, "--_run", mode, path, config_dir, out], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--_run":
        print(json.dumps(run_one(*sys.argv[2:6])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=["fp16", "fp32"])
    parser.add_argument("--workdir", default="/tmp/motion_bench")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the modes; medians reported")
    parser.add_argument("--modes", nargs="+", default=["ours_load", "ours_device", "diffusers", "ours_convert"])
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    config_dir = os.path.join(args.workdir, "config")
    rows = []
    try:
        for dtype in args.dtypes:
            path = os.path.join(args.workdir, f"mm_v2_{dtype}.safetensors")
            size = write_module(path, config_dir, dtype)
            runs = {m: [] for m in args.modes}
            for _ in range(args.repeats):
                for mode in args.modes:
                    r = measure(mode, path, config_dir, os.path.join(args.workdir, "out.safetensors"))
                    runs[mode].append(r)
                    print(f"  {dtype} {mode:<13} built {r['built']:6.2f} s, touched {r['seconds']:6.2f} s, "
                          f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB", flush=True)
            for mode, rs in runs.items():
                rows.append((dtype, size, mode, {k: statistics.median(r[k] for r in rs) for k in ("built", "seconds")},
                             max(r["peak_rss"] for r in rs), max(r["rss_after_imports"] for r in rs),
                             [round(r["seconds"], 2) for r in rs]))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    gb = 1024 ** 3
    print(f"\nmedians of {args.repeats} rounds")
    print(f"{'file':<6}{'size GiB':>9}  {'mode':<13}{'built s':>8}{'touched s':>10}{'peak RSS GiB':>14}"
          f"{'x file':>8}{'(peak - imports) x file':>25}  all rounds (touched s)")
    for dtype, size, mode, t, peak, base, all_s in rows:
        print(f"{dtype:<6}{size / gb:>9.2f}  {mode:<13}{t['built']:>8.2f}{t['seconds']:>10.2f}{peak / gb:>14.2f}"
              f"{peak / size:>8.2f}{(peak - base) / size:>25.2f}  {all_s}")


if __name__ == "__main__":
    main()
