"""Benchmark: convert a full-size AnimateDiff v2 motion module, ours vs diffusers' `from_single_file`.

    python benchmarks/convert_motion.py [--dtypes fp16 fp32] [--workdir /tmp/motion_bench] [--keep]

Writes an original-format v2 motion module (`mm_sd_v15_v2` layout: 588 tensors incl. position
encodings, ~453 M parameters: ~0.9 GB fp16 / ~1.8 GB fp32) as `.safetensors` with random weights,
then measures, each in a fresh subprocess (wall time of the work after imports; peak RSS of the
process from `resource.getrusage`, and the same minus the RSS right after imports):

  ours load      load_motion_module(file): Flax motion params (float32 numpy) in memory
  ours convert   `python -m convert motion` work: load_motion_module + save_params to .safetensors
  diffusers      MotionAdapter.from_single_file(file, config=<local config folder>)

Target (issue #3): peak RSS under 1.5x the file size; faster than diffusers. Files are deleted
afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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

    from convert.motion import diffusers_key_to_original, expected_shapes, sinusoid
    MotionAdapter().save_config(config_dir)  # SD1.5 v2 defaults; config only
    rng = np.random.default_rng(0)
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    tensors = {}
    for key, shape in expected_shapes((320, 640, 1280, 1280), 2, True).items():
        tensors[diffusers_key_to_original(key)] = (rng.standard_normal(shape, np.float32) * 0.02).astype(np_dtype)
        if key.endswith((".attn1.to_q.weight", ".attn2.to_q.weight")):
            pe_key = diffusers_key_to_original(key).replace(".to_q.weight", ".pos_encoder.pe")
            tensors[pe_key] = sinusoid(32, shape[0]).astype(np_dtype)
    save_file(tensors, path)
    return os.path.getsize(path)


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(mode: str, path: str, config_dir: str, out: str) -> dict:
    """Runs inside a fresh subprocess: imports first, then the timed work."""
    import numpy as np  # noqa: F401
    if mode == "diffusers":
        import torch  # noqa: F401
        from diffusers import MotionAdapter
    else:
        from animatediff_jax.checkpoint import save_params
        from convert.motion import load_motion_module, motion_metadata
    base = _rss_now()
    start = time.perf_counter()
    if mode == "diffusers":
        MotionAdapter.from_single_file(path, config=config_dir)
    elif mode == "ours load":
        load_motion_module(path)
    else:
        mm = load_motion_module(path)
        save_params(out, mm.params, config=mm.config, source="benchmark", metadata=motion_metadata(mm))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_rss": peak, "peak_over_imports": peak - base}


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
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    config_dir = os.path.join(args.workdir, "config")
    rows = []
    try:
        for dtype in args.dtypes:
            path = os.path.join(args.workdir, f"mm_v2_{dtype}.safetensors")
            size = write_module(path, config_dir, dtype)
            for mode in ("ours load", "ours convert", "diffusers"):
                r = measure(mode, path, config_dir, os.path.join(args.workdir, "out.safetensors"))
                rows.append((dtype, size, mode, r))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    gb = 1024 ** 3
    print(f"{'file':<6}{'size GiB':>9}  {'mode':<13}{'seconds':>8}{'peak RSS GiB':>14}{'over imports':>14}{'x file':>8}")
    for dtype, size, mode, r in rows:
        print(f"{dtype:<6}{size / gb:>9.2f}  {mode:<13}{r['seconds']:>8.1f}{r['peak_rss'] / gb:>14.2f}"
              f"{r['peak_over_imports'] / gb:>14.2f}{r['peak_over_imports'] / size:>8.2f}")


if __name__ == "__main__":
    main()
