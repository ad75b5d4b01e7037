"""Benchmark: convert a full-size SD1.5 single file, ours vs diffusers' `from_single_file`.

    python benchmarks/convert_base.py [--dtypes fp16 fp32] [--workdir /tmp/convert_bench] [--keep]

Writes an SD1.5 LDM single file (.safetensors) with random weights at the real config (UNet, VAE,
CLIP text: ~1.07 B parameters, ~2.1 GB fp16 / ~4.3 GB fp32), then measures, each in a fresh
subprocess (wall time and CPU time (user+sys, all threads) of the work after imports; peak RSS of the whole process, VmHWM from
/proc/self/status — `ru_maxrss` would carry over the parent's peak across exec). Loads that return
memory-mapped tensors (diffusers keeps an fp32 file's tensors mapped; our stored params are
mapped) are made to read every page, so each row measures weights actually in memory:

  ours convert   convert_base(file, out_dir): all three networks -> Flax .safetensors on disk
  ours load      load_base(file): all three networks -> Flax params (numpy) in memory
  ours load converted  load_params of the three files `ours convert` wrote (the cached path sampling
                 takes after the first conversion)
  diffusers      UNet2DConditionModel.from_single_file + AutoencoderKL.from_single_file + the CLIP
                 text model (diffusers' `create_diffusers_clip_model_from_ldm`), from one loaded
                 checkpoint dict, as `StableDiffusionPipeline.from_single_file` does; configs from
                 local folders written here (no network). The tokenizer/scheduler are not loaded.
  diffusers_native  the same with torch_dtype = the file's dtype (diffusers' default builds float32
                 models, so an fp16 file is upcast)
  diffusers_unet UNet2DConditionModel.from_single_file alone

Targets: peak RSS < 1.5x file size; faster than diffusers. Files are deleted afterwards.
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
        flat = np.asarray(a).reshape(-1).view(np.uint8)
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
    """Runs inside a fresh subprocess; returns work seconds and peak RSS."""
    if mode.startswith("ours"):
        from convert.base import convert_base, load_base
    else:
        import torch  # noqa: F401
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, load_single_file_checkpoint
        from transformers import CLIPTextModel
    base_rss = peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "ours_convert":
        convert_base(path, out_dir, progress=False)
    elif mode == "ours_load":
        model = load_base(path, progress=False)
        assert model.unet
    elif mode == "ours_load_converted":
        from animatediff_jax.checkpoint import load_params
        from flax.traverse_util import flatten_dict
        for name in ("unet", "vae", "text_encoder"):
            params, _ = load_params(os.path.join(out_dir, f"{name}.safetensors"))
            touch(flatten_dict(params).values())
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
        touch(p.detach().numpy() if p.dtype != torch.bfloat16 else p.detach().view(torch.int16).numpy()
              for m in (unet, vae, text) for p in m.state_dict().values())
    elif mode == "diffusers_unet":
        unet = UNet2DConditionModel.from_single_file(path, config=os.path.join(config_dir, "unet"), local_files_only=True)
        touch(p.detach().numpy() for p in unet.state_dict().values())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss()
    return {"mode": mode, "seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak, "rss_after_imports": base_rss}


def measure(mode: str, path: str, config_dir: str, out_dir: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, __file__, "--_run", mode, path, config_dir, out_dir], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=["fp16", "fp32"])
    p.add_argument("--modes", nargs="+", default=["ours_convert", "ours_load_converted", "ours_load", "diffusers", "diffusers_native",
                            "diffusers_unet"])
    p.add_argument("--workdir", default="/tmp/convert_bench")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds over all modes (interleaved, so load from other processes hits each alike); "
                        "the table reports the fastest round and the largest peak RSS")
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
            results = {m: [] for m in args.modes}
            for _ in range(args.repeats):
                for mode in args.modes:
                    r = measure(mode, path, config_dir, os.path.join(args.workdir, f"out_{dtype}"))
                    results[mode].append(r)
                    print(f"  {mode:<19} {r['seconds']:7.1f} s ({r.get('cpu_seconds', float('nan')):5.1f} s CPU)  peak RSS {r['peak_rss'] / 1e9:6.2f} GB "
                          f"({r['peak_rss'] / size:.2f}x file; {r['rss_after_imports'] / 1e9:.2f} GB after imports)",
                          flush=True)
            for mode, rs in results.items():
                rows.append(dict(mode=mode, dtype=dtype, file_gb=size / 1e9, seconds=min(r["seconds"] for r in rs),
                                 cpu_seconds=min(r.get("cpu_seconds", float("nan")) for r in rs),
                                 all_seconds=[round(r["seconds"], 1) for r in rs],
                                 peak_rss=max(r["peak_rss"] for r in rs),
                                 rss_after_imports=max(r["rss_after_imports"] for r in rs),
                                 rss_over_file=max(r["peak_rss"] for r in rs) / size))
            os.remove(path)
            shutil.rmtree(os.path.join(args.workdir, f"out_{dtype}"), ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print("\n| file | mode | work time (s), best (all rounds) | CPU time (s), best | peak RSS (GB) | RSS / file size "
          "| RSS after imports (GB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| SD1.5 {r['dtype']} .safetensors ({r['file_gb']:.2f} GB) | {r['mode']} | {r['seconds']:.1f} "
              f"({', '.join(map(str, r['all_seconds']))}) | {r['cpu_seconds']:.1f} | {r['peak_rss'] / 1e9:.2f} | {r['rss_over_file']:.2f} | "
              f"{r['rss_after_imports'] / 1e9:.2f} |")


if __name__ == "__main__":
    main()
