"""Benchmark: convert a full-size SD1.5 single file, ours vs diffusers' `from_single_file`.

    python benchmarks/convert_base.py [--dtypes fp16 fp32] [--workdir /tmp/convert_bench] [--keep]

Writes an SD1.5 LDM single file (.safetensors) with random weights at the real config (UNet, VAE,
CLIP text: ~1.07 B parameters, ~2.1 GB fp16 / ~4.3 GB fp32), then measures each mode in a fresh
subprocess, modes interleaved round by round (`--repeats`; the table gives medians), so load from
other processes hits each alike. Times are of the work after imports (and after JAX has started
its CPU backend); peak RSS is VmHWM of the whole process (`ru_maxrss` would carry over the
parent's peak across exec). Two times per row:

  built    the call returns (memory-mapped loads have read nothing yet)
  touched  then one element per 4 KiB page of every parameter read: weights really in memory —
           the figure comparable across rows

  ours_load      load_base(file): Flax params as zero-copy numpy views of the mapped file. The
                 check of names/shapes against our networks uses a param-shape table cached on
                 disk after the first run (a warm-up run fills it before the rounds)
  ours_load_cold the same with an empty shape cache (traces the three networks' init: seconds)
  ours_device    load_base(file, device=True): leaves `jax.device_put` one by one (the one copy;
                 transposes happen there), each source leaf's pages released once on the device
  ours_convert   convert_base(file, out_dir): all three networks -> Flax .safetensors on disk
  ours_load_converted  load_params of the files `ours_convert` wrote (the cached path sampling
                 takes after the first conversion)
  diffusers      UNet2DConditionModel.from_single_file + AutoencoderKL.from_single_file + the CLIP
                 text model (diffusers' `create_diffusers_clip_model_from_ldm`), from one loaded
                 checkpoint dict, as `StableDiffusionPipeline.from_single_file` does; configs from
                 local folders written here (no network). The tokenizer/scheduler are not loaded.
  diffusers_native  the same with torch_dtype = the file's dtype (diffusers' default builds float32
                 models, so an fp16 file is upcast)

Targets: peak RSS < 1.5x file size; faster than diffusers. Files are deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ----------------------------------------------------------------------------- the file

def sd15_configs(folder: str) -> None:
    """diffusers/transformers config folders for SD1.5 (unet/, vae/, text_encoder/), no weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig
    with torch.device("meta"):
        UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8).save_config(os.path.join(folder, "unet"))
        AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                      sample_size=512).save_config(os.path.join(folder, "vae"))
    CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu").save_pretrained(
        os.path.join(folder, "text_encoder"))


def write_sd15_file(path: str, config_dir: str, dtype: str) -> int:
    """Random SD1.5 LDM single file, streamed tensor by tensor. Returns its size in bytes."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from animatediff_jax.checkpoint import write_safetensors
    from convert.ldm import diffusers_to_ldm
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(config_dir, "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(config_dir, "vae")))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(config_dir, "text_encoder")))
    shapes = {name: {k: tuple(v.shape) for k, v in m.state_dict().items()} for name, m in
              (("unet", unet), ("vae", vae), ("text", text))}
    # Map names (and the VAE attention reshape) with the inverse LDM rules, on zero-size stand-ins.
    stand_in = lambda d: {k: np.broadcast_to(np.zeros((), np.int8), s) for k, s in d.items()}  # noqa: E731
    ldm = diffusers_to_ldm(stand_in(shapes["unet"]), stand_in(shapes["vae"]), stand_in(shapes["text"]))
    np_dtype = np.dtype(np.float16 if dtype == "fp16" else np.float32)
    specs = {k: (v.shape, np_dtype) for k, v in ldm.items()}
    rng = np.random.default_rng(0)

    def tensors():
        for k, (shape, dt) in specs.items():
            yield k, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt)

    write_safetensors(path, specs, tensors(), {"format": "pt"})
    return os.path.getsize(path)


# ----------------------------------------------------------------------------- one measurement

def touch(arrays) -> None:
    """Read one element per 4 KiB page of every array: memory-mapped (lazy) loads must really load."""
    import numpy as np
    for a in arrays:
        a = np.asarray(a)
        a = a.transpose(np.argsort(a.strides, kind="stable")[::-1])  # a transposed view -> its contiguous order
        flat = a.reshape(-1).view(np.uint8)  # a view (no copy) for contiguous data
        int(flat[::4096].sum())


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_one(mode: str, path: str, config_dir: str, out_dir: str) -> dict:
    """Runs inside a fresh subprocess; returns seconds (built, touched) and peak RSS."""
    if mode.startswith("ours"):
        import jax
        from animatediff_jax.params import flatten

        from convert.base import convert_base, load_base
        jax.device_put(0).block_until_ready()  # start the backend (an import-time cost)
    else:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, load_single_file_checkpoint
        from transformers import CLIPTextModel
    base_rss = peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    arrays = []
    if mode == "ours_convert":
        convert_base(path, out_dir, progress=False)
    elif mode in ("ours_load", "ours_load_cold", "ours_device"):
        model = load_base(path, progress=False, device=True if mode == "ours_device" else None)
        arrays = [a for tree in (model.unet, model.vae, model.text_encoder) for a in flatten(tree).values()]
    elif mode == "ours_load_converted":
        from animatediff_jax.checkpoint import load_params
        for name in ("unet", "vae", "text_encoder"):
            params, _ = load_params(os.path.join(out_dir, f"{name}.safetensors"))
            arrays += flatten(params).values()
    elif mode in ("diffusers", "diffusers_native"):
        # diffusers_native: torch_dtype = the file's dtype (no fp16 -> fp32 upcast of the models)
        ckpt = load_single_file_checkpoint(path, local_files_only=True)
        dt = next(iter(ckpt.values())).dtype if mode == "diffusers_native" else None
        unet = UNet2DConditionModel.from_single_file(ckpt, config=os.path.join(config_dir, "unet"),
                                                     local_files_only=True, torch_dtype=dt)
        vae = AutoencoderKL.from_single_file(ckpt, config=os.path.join(config_dir, "vae"), local_files_only=True,
                                             torch_dtype=dt)
        text = create_diffusers_clip_model_from_ldm(CLIPTextModel, ckpt, config=config_dir, subfolder="text_encoder",
                                                    local_files_only=True, torch_dtype=dt)
        arrays = [p.detach().numpy() if p.dtype != torch.bfloat16 else p.detach().view(torch.int16).numpy()
                  for m in (unet, vae, text) for p in m.state_dict().values()]
    built = time.perf_counter() - t0
    touch(arrays)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": mode, "built": built, "seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak_rss(),
            "rss_after_imports": base_rss}


def measure(mode: str, path: str, config_dir: str, out_dir: str) -> dict:
    import tempfile
    cache = os.path.join(os.path.dirname(config_dir), "shape_cache")
    if mode == "ours_load_cold":
        cache = tempfile.mkdtemp(dir=os.path.dirname(config_dir))
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", ANIMATEDIFF_JAX_CACHE=cache)
    r = subprocess.run([sys.executable, __file__, "--_run", mode, path, config_dir, out_dir], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=["fp16", "fp32"])
    p.add_argument("--modes", nargs="+", default=["ours_load", "ours_device", "diffusers", "diffusers_native",
                                                  "ours_load_cold", "ours_convert", "ours_load_converted"])
    p.add_argument("--workdir", default="/tmp/convert_bench")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds over all modes (interleaved, so load from other processes hits each alike); "
                        "the table reports medians and the largest peak RSS")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--_run", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._run:
        print(json.dumps(run_one(*args._run)))
        return
    os.makedirs(args.workdir, exist_ok=True)
    config_dir = os.path.join(args.workdir, "configs")
    sd15_configs(config_dir)
    rows = []
    try:
        for dtype in args.dtypes:
            path = os.path.join(args.workdir, f"sd15_random_{dtype}.safetensors")
            t0 = time.perf_counter()
            size = write_sd15_file(path, config_dir, dtype)
            print(f"wrote {path}: {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
            if any(m.startswith("ours_") for m in args.modes):
                measure("ours_load", path, config_dir, "")  # warm-up: fills the shape cache
            results = {m: [] for m in args.modes}
            for _ in range(args.repeats):
                for mode in args.modes:
                    r = measure(mode, path, config_dir, os.path.join(args.workdir, f"out_{dtype}"))
                    results[mode].append(r)
                    print(f"  {mode:<19} built {r['built']:6.2f} s, touched {r['seconds']:6.2f} s "
                          f"({r['cpu_seconds']:5.1f} s CPU)  peak RSS {r['peak_rss'] / 1e9:6.2f} GB "
                          f"({r['peak_rss'] / size:.2f}x file)", flush=True)
            for mode, rs in results.items():
                med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
                rows.append(dict(mode=mode, dtype=dtype, file_gb=size / 1e9, built=med("built"),
                                 seconds=med("seconds"), cpu_seconds=med("cpu_seconds"),
                                 all_seconds=[round(r["seconds"], 2) for r in rs],
                                 peak_rss=max(r["peak_rss"] for r in rs),
                                 rss_after_imports=max(r["rss_after_imports"] for r in rs),
                                 rss_over_file=max(r["peak_rss"] for r in rs) / size))
            os.remove(path)
            shutil.rmtree(os.path.join(args.workdir, f"out_{dtype}"), ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"\n{len(rs)} rounds; medians. | file | mode | built (s) | touched (s) (all rounds) | CPU (s) "
          "| peak RSS (GB) | RSS / file size | RSS after imports (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| SD1.5 {r['dtype']} ({r['file_gb']:.2f} GB) | {r['mode']} | {r['built']:.2f} | {r['seconds']:.2f} "
              f"({', '.join(map(str, r['all_seconds']))}) | {r['cpu_seconds']:.1f} | {r['peak_rss'] / 1e9:.2f} | "
              f"{r['rss_over_file']:.2f} | {r['rss_after_imports'] / 1e9:.2f} |")

if __name__ == "__main__":
    main()
