"""Benchmark: read full-size SD1.5 ControlNet / v3 SparseCtrl files, ours vs diffusers' `from_single_file`.

    python benchmarks/convert_controlnet.py [--workdir /tmp/controlnet_bench] [--keep]

Writes three float16 files in their real layouts, zeros except the position encodings (timing does
not depend on the values): an LDM ControlNet (`control_v11p_sd15_*.safetensors`, `control_model.`
keys, 361 M parameters) and the two original SparseCtrl `.ckpt` (rgb: simplified condition
embedding; scribble: full embedding). For each it prints, in one process after the imports:

  plan       plan_controlnet: keys renamed, config inferred, checked against the Flax network's
             parameter shapes (the shape table is cached on disk after the first trace: "cold" is
             the first call in a fresh cache under --workdir, "warm" the second)
  load       load_controlnet(dtype=None): zero-copy views of the mapped file
  load_fp32  load_controlnet(dtype="float32"): one cast pass (what a float32 pipeline reads)
  diffusers  <Model>.from_single_file(file, config=<local config folder>) (float32)
  config     whether the inferred config equals the shipped reference (SD15_CONTROLNET,
             SPARSECTRL_RGB / SPARSECTRL_SCRIBBLE with MOTION_SPARSECTRL)

Times are one run each on whatever the machine is doing; files are deleted unless --keep.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def zeros_state_dict(model) -> dict:
    """float16 zeros of a (meta-device) torch model's state dict; position encodings the sinusoid."""
    import numpy as np

    from convert.motion import sinusoid
    out = {}
    for k, v in model.state_dict().items():
        shape = tuple(v.shape)
        out[k] = sinusoid(shape[1], shape[2]).astype(np.float16) if k.endswith("pos_embed.pe") else \
            np.zeros(shape, np.float16)
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/convert_controlnet.py", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/controlnet_bench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    import torch
    from diffusers import ControlNetModel, SparseControlNetModel

    from animatediff_jax.models.configs import MOTION_SPARSECTRL, SD15_CONTROLNET, SPARSECTRL_RGB, SPARSECTRL_SCRIBBLE
    from convert.controlnet import load_controlnet, plan_controlnet
    from animatediff_jax.param_shapes import flax_param_shapes
    from tests.convert.controlnet_fixtures import save_safetensors, save_torch, to_ldm, to_original_sparsectrl

    os.makedirs(args.workdir, exist_ok=True)
    os.environ["ANIMATEDIFF_JAX_CACHE"] = os.path.join(args.workdir, "cache")  # a fresh shape-table cache
    cases = []
    with torch.device("meta"):
        cn = ControlNetModel(cross_attention_dim=768)
        rgb = SparseControlNetModel(conditioning_channels=4, use_simplified_condition_embedding=True)
        scribble = SparseControlNetModel(conditioning_channels=3, use_simplified_condition_embedding=False)
    for name, model, write, want in (
            ("controlnet (LDM .safetensors)", cn,
             lambda p, m: save_safetensors(to_ldm(zeros_state_dict(m), 2), p + ".safetensors"),
             (SD15_CONTROLNET, None)),
            ("sparsectrl rgb (.ckpt)", rgb,
             lambda p, m: save_torch(to_original_sparsectrl(zeros_state_dict(m)), p + ".ckpt"),
             (SPARSECTRL_RGB, MOTION_SPARSECTRL)),
            ("sparsectrl scribble (.ckpt)", scribble,
             lambda p, m: save_torch(to_original_sparsectrl(zeros_state_dict(m)), p + ".ckpt"),
             (SPARSECTRL_SCRIBBLE, MOTION_SPARSECTRL))):
        base = os.path.join(args.workdir, name.split(" (")[0].replace(" ", "_"))
        config_dir = base + "_config"
        model.save_config(config_dir)
        cases.append((name, write(base, model), type(model), config_dir, want))

    flax_param_shapes.cache_clear()
    rows = []
    for name, path, cls, config_dir, want in cases:
        plan, cold = timed(lambda: plan_controlnet(path))
        plan.close()
        flax_param_shapes.cache_clear()  # the on-disk table stays: the "warm" plan reads it
        plan, warm = timed(lambda: plan_controlnet(path))
        plan.close()
        _, load = timed(lambda: load_controlnet(path))
        _, load32 = timed(lambda: load_controlnet(path, dtype="float32"))
        _, ref = timed(lambda: cls.from_single_file(path, config=config_dir, local_files_only=True))
        same = (plan.config, plan.motion) == want
        rows.append((name, os.path.getsize(path) / 2**20, len(plan.leaves), cold, warm, load, load32, ref, same))

    print(f"{'file':30} {'MiB':>6} {'leaves':>6} {'plan cold':>9} {'plan warm':>9} {'load':>6} {'load_fp32':>9} "
          f"{'diffusers':>9}  config")
    for name, mib, leaves, cold, warm, load, load32, ref, same in rows:
        print(f"{name:30} {mib:6.0f} {leaves:6d} {cold:9.2f} {warm:9.2f} {load:6.2f} {load32:9.2f} {ref:9.2f}  "
              f"{'= reference' if same else 'DIFFERS'}")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
