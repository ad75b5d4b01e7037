"""One-shot GPU suite (run by benchmarks/gpu.sh): sampling and the train step at the real SD1.5 + v2 sizes.

    python -m benchmarks.gpu_suite                 # NVIDIA GPU: the real configs (see gpu.sh)
    python -m benchmarks.gpu_suite --smoke         # any machine: tiny configs through the same code

Sampling: SD1.5 + motion module v2 with random weights at the real configs, 16 frames x 512², 25 DDIM
steps, CFG 7.5 (doubled batch), batch 1, VAE decode included — ours in bfloat16 once per attention
kernel vs diffusers' AnimateDiffPipeline in float16 with SDPA: seconds per video (median of the timed
calls after a first call), first-call (compile) time, peak device memory, achieved TFLOP/s and its
share of the measured bf16 matmul peak. Train step: SD1.5 + v2, batches of 16 x 256² clips from
pre-computed latents (4 by default, configs/training/training.yaml's; `--train-batch 4 8` for more),
motion modules trained, bfloat16, without gradient checkpointing at each batch (and, with `--parts ...
remat`, with it at the first: the shipped config's setting): clips/s, MFU (vs the measured peak), peak memory; `--profile DIR`
adds a profile of one step. FLOPs are XLA's counts, made in a CPU process beside the others: the UNet's
forward (CFG batch) x steps for sampling (text encoder and decode not counted), and the train step
without remat (model FLOPs: the recomputation remat adds is not counted, as MFU is defined). Each part
runs in its own process (its own peak memory; JAX and torch never share a device). Prints one Markdown
table and writes the rows to `--json`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def configs(smoke: bool):
    """(unet, motion, vae, text configs, sampling settings, train settings): the real ones or tiny ones."""
    from animatediff_jax.models import configs as c
    if not smoke:
        return (c.SD15_UNET, c.MOTION_V2, c.SD15_VAE, c.SD15_TEXT, dict(frames=16, size=512, steps=25, timed=2),
                dict(batch=4, frames=16, size=256, steps=5))
    unet = c.UNetConfig(block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",),
                        up_block_types=("CrossAttnUpBlock2D",), layers_per_block=1, cross_attention_dim=32,
                        attention_head_dim=2, norm_num_groups=4)
    motion = c.MotionConfig(num_attention_heads=2, norm_num_groups=4, max_seq_length=32, use_mid_block=False)
    vae = c.VAEConfig(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                      up_block_types=("UpDecoderBlock2D",), layers_per_block=1, norm_num_groups=4)
    text = c.CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, eos_token_id=513, pad_token_id=513, bos_token_id=512)
    return unet, motion, vae, text, dict(frames=2, size=16, steps=1, timed=1), dict(batch=1, frames=2, size=16, steps=1)


def latent_size(vae_config, size: int) -> int:
    """Latent side for `size` pixels: the VAE halves the resolution at every level but the last."""
    return size // 2 ** (len(vae_config.block_out_channels) - 1)


def _tokenizer_dir() -> str:
    from animatediff_jax.tiny_models import write_byte_tokenizer
    return write_byte_tokenizer(tempfile.mkdtemp())


# ------------------------------------------------------------------ parts (each in its own process)
def part_peak(smoke: bool) -> dict:
    """Measured bf16 matmul throughput of the default JAX device (n^3 matmul of random data, median of 10)."""
    import jax
    import jax.numpy as jnp
    from animatediff_jax.xla_options import jit
    n = 512 if smoke else 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)  # not ones: zeros/ones run faster
    f = jit(lambda a: a @ a)
    f(a).block_until_ready()
    ts = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return dict(part="peak", device=jax.devices()[0].device_kind, peak_tflops=2 * n**3 / statistics.median(ts) / 1e12)


def _device_peak_gib() -> float | None:
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None


def part_ours(smoke: bool, kernel: str) -> dict:
    from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
    from animatediff_jax.tokenizer import PromptTokenizer
    unet_c, motion_c, vae_c, text_c, s, _ = configs(smoke)
    dtype = "float32" if smoke else "bfloat16"
    pipe = AnimateDiffPipeline.random(unet_c, motion_c, vae_c, text_c, PromptTokenizer.from_pretrained(_tokenizer_dir()),
                                      dtype=dtype, attention_impl=kernel)
    lat = latent_size(vae_c, s["size"])
    latents = np.random.default_rng(0).standard_normal((1, s["frames"], lat, lat, 4), np.float32)

    def call():
        pipe(["a cat walking"], [""], seeds=[0], width=s["size"], height=s["size"], frames=s["frames"],
             steps=s["steps"], guidance_scale=7.5, latents=latents, progress=False)

    first, times = _time(call, s["timed"])
    return dict(part="sample", impl=f"ours {kernel}", dtype=dtype, s_per_video=statistics.median(times),
                first_call_s=first, peak_gib=_device_peak_gib())


def part_flops(smoke: bool, *train_batches: str) -> dict:
    """TFLOP of the sampling run's UNet forwards (XLA's count of one CFG forward, implementation "xla",
    the same math counted exactly, x steps) and of one train step without remat at each of
    `train_batches`. Run on CPU (`start_part` sets JAX_PLATFORMS), beside the device parts: lowering
    alone counts there, while jaxlib 0.11's GPU backend returns no analysis for an uncompiled program."""
    import jax
    import jax.numpy as jnp
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.xla_options import jit
    from benchmarks.train_step import step_flops
    unet_c, motion_c, vae_c, _, s, t = configs(smoke)
    lat = latent_size(vae_c, s["size"])
    unet = UNet3DConditionModel(unet_c, motion_c, attention_impl="xla", dtype=jnp.float32 if smoke else jnp.bfloat16)
    args = (jax.ShapeDtypeStruct((2, s["frames"], lat, lat, 4), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32),
            jax.ShapeDtypeStruct((2, 77, unet_c.cross_attention_dim), jnp.float32))
    params = jax.eval_shape(lambda: unet.init(jax.random.PRNGKey(0), *(jnp.zeros(a.shape, a.dtype) for a in args)))
    cost = jit(unet.apply).lower(params, *args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    dtype = jnp.float32 if smoke else jnp.bfloat16
    train = {b: step_flops(unet_c, motion_c, int(b), t["frames"], latent_size(vae_c, t["size"]), dtype) / 1e12
             for b in train_batches}
    return dict(part="flops", sample_tflop=float(cost["flops"]) * s["steps"] / 1e12, train_tflop=train)


def part_diffusers(smoke: bool) -> dict:
    import torch
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from animatediff_jax.models.configs import to_dict
    unet_c, motion_c, vae_c, text_c, s, _ = configs(smoke)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    unet = UNet2DConditionModel(**to_dict(unet_c))
    adapter = MotionAdapter(block_out_channels=unet_c.block_out_channels, motion_layers_per_block=unet_c.layers_per_block,
                            motion_transformer_layers_per_block=motion_c.num_transformer_blocks,
                            motion_num_attention_heads=motion_c.num_attention_heads,
                            motion_norm_num_groups=motion_c.norm_num_groups, motion_max_seq_length=motion_c.max_seq_length,
                            use_motion_mid_block=motion_c.use_mid_block)
    vae = AutoencoderKL(**{k: v for k, v in to_dict(vae_c).items() if k != "scaling_factor"})
    text = CLIPTextModel(CLIPTextConfig(**to_dict(text_c)))
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(_tokenizer_dir()),
                               unet=unet, motion_adapter=adapter,
                               scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                                                       steps_offset=1, clip_sample=False)).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    lat = latent_size(vae_c, s["size"])
    latents = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, s["frames"], lat, lat), np.float32))
    latents = latents.to(device, dtype)

    def call():
        pipe(prompt=["a cat walking"], negative_prompt=[""], num_frames=s["frames"], height=s["size"], width=s["size"],
             num_inference_steps=s["steps"], guidance_scale=7.5, latents=latents.clone(), output_type="np")
        if device == "cuda":
            torch.cuda.synchronize()

    first, times = _time(call, s["timed"])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return dict(part="sample", impl="diffusers SDPA", dtype=str(dtype).removeprefix("torch."),
                s_per_video=statistics.median(times), first_call_s=first, peak_gib=peak)


def part_train(smoke: bool, remat: str, batch: str, profile_dir: str = "") -> dict:
    """The train step at `batch` clips, `remat` "on" (gradient checkpointing) or "off"; its FLOPs come
    from `part_flops`. With `profile_dir`, one more step runs under `jax.profiler` and the folder gets
    the trace (train_step.xplane.pb.gz), its summary (train_step_profile.md, `profile_summary`) and the
    optimised HLO (train_step_hlo.txt.gz) that names the kernels' instructions."""
    import jax.numpy as jnp
    from benchmarks.train_step import compile_and_time
    unet_c, motion_c, vae_c, _, _, t = configs(smoke)
    dtype = jnp.float32 if smoke else jnp.bfloat16
    compiled, run, compile_s, step_s = compile_and_time(unet_c, motion_c, int(batch), t["frames"],
                                                        latent_size(vae_c, t["size"]), t["steps"], dtype,
                                                        remat == "on")
    row = dict(part="train", impl=f"ours train step, batch {batch}" + (", remat" if remat == "on" else ""),
               dtype=jnp.dtype(dtype).name, batch=int(batch), step_s=step_s, clips_s=int(batch) / step_s,
               first_call_s=compile_s, peak_gib=_device_peak_gib())
    if profile_dir:  # the row first: a profiler that fails or hangs must not lose the measurement
        print(json.dumps(row), flush=True)
        try:
            _profile(run, compiled.as_text(), profile_dir)
        except Exception as e:  # noqa: BLE001 - reported in the row; the timing above stands
            row["profile_error"] = f"{type(e).__name__}: {e}"
    return row


def _profile(call, hlo: str, folder: str) -> None:
    import glob
    import gzip
    import shutil
    import jax
    from benchmarks.profile_summary import summarize
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        call()
        jax.profiler.stop_trace()
        trace, = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        with open(trace, "rb") as src, gzip.open(os.path.join(folder, "train_step.xplane.pb.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        with open(os.path.join(folder, "train_step_profile.md"), "w") as fh:
            fh.write(summarize(trace))
    with gzip.open(os.path.join(folder, "train_step_hlo.txt.gz"), "wt") as fh:
        fh.write(hlo)


def _time(call, timed: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(timed):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return first, times


# ------------------------------------------------------------------ orchestration
def start_part(args: list[str], smoke: bool) -> subprocess.Popen:
    """One part in a fresh process: the FLOP count on the CPU at low priority (it runs beside the others and
    must not slow their compiles), every other part on the default device."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_suite", *(["--smoke"] if smoke else []), "--part", *args]
    counting = args[0] == "flops"
    env = dict(os.environ, **({"JAX_PLATFORMS": "cpu"} if counting else {}))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.nice(10)) if counting else None)


def finish_part(proc: subprocess.Popen, args: list[str], timeout: float | None, log: str | None) -> dict:
    """The part's JSON row, its last stdout line (an error row if it failed or outlasted `timeout`).
    The part's stderr is appended to `log` when given (the full traceback of a failed part)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)  # None: no limit
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        lines = stdout.strip().splitlines()  # a part that printed its row before hanging (profiling) keeps it
        row = (dict(json.loads(lines[-1]), timed_out=f"after its row, at {timeout:.0f} s") if lines else
               dict(part=args[0], impl=" ".join(args), error=f"timed out after {timeout:.0f} s"))
    else:
        lines = stdout.strip().splitlines()
        row = (dict(part=args[0], impl=" ".join(args), error=(stderr.strip().splitlines() or ["?"])[-1])
               if proc.returncode or not lines else json.loads(lines[-1]))
    if log:
        with open(log, "a") as fh:
            fh.write(f"===== part {' '.join(args)}: {row.get('error', 'ok')}\n{stderr}\n")
    return row


def run_part(args: list[str], smoke: bool, timeout: float, log: str | None) -> dict:
    """`start_part` then `finish_part`; a part given under 30 s is skipped, not started."""
    if timeout < 30:
        return dict(part=args[0], impl=" ".join(args), error="skipped: the suite's --budget is spent")
    return finish_part(start_part(args, smoke), args, timeout, log)


def table(rows: list[dict], peak: float | None) -> str:
    def f(x, fmt):
        return "n/a" if x is None else format(x, fmt)
    out = ["| part | implementation | dtype | s/video or s/step | clips/s | first call s | peak memory GiB "
           "| TFLOP/s | % of bf16 peak |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['part']} | {r['impl']} | | failed: {r['error']} | | | | | |")
            continue
        secs = r.get("s_per_video", r.get("step_s"))
        tflops = r["tflop"] / secs if r.get("tflop") else None
        share = f"{tflops / peak:.0%}" if tflops and peak else "n/a"
        out.append(f"| {r['part']} | {r['impl']} | {r['dtype']} | {secs:.2f} | {f(r.get('clips_s'), '.2f')} | "
                   f"{r['first_call_s']:.1f} | {f(r.get('peak_gib'), '.2f')} | {f(tflops, '.1f')} | {share} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny configs (any backend), same code path")
    p.add_argument("--kernels", nargs="+", default=["cudnn", "chunked"],
                   help="our attention kernels to time (the first one before diffusers and the train step)")
    p.add_argument("--json", default="gpu_suite.json", help="where the rows are written")
    p.add_argument("--part-timeout", type=float, default=300.0, help="seconds per part before it is abandoned")
    p.add_argument("--budget", type=float, default=float("inf"),
                   help="seconds for the whole suite: later parts get what is left, none under 30 s")
    p.add_argument("--parts", nargs="+", choices=("ours", "diffusers", "train", "remat"),
                   default=["ours", "diffusers", "train"],
                   help="what to run: our sampling (each of --kernels), diffusers' sampling, the train step "
                        "without remat (each of --train-batch), with remat (the first of --train-batch; its "
                        "compile alone outlasted 169 s on an H200); default: all but remat")
    p.add_argument("--train-batch", nargs="+", type=int,
                   help="clips per train step (default: the shipped training config's 4; 1 with --smoke)")
    p.add_argument("--profile", metavar="DIR",
                   help="profile one step of the first train part (no remat) and write its trace, summary "
                        "and optimised HLO here")
    p.add_argument("--log", help="append each part's stderr (tracebacks of failed parts) to this file")
    p.add_argument("--part", nargs="+", help=argparse.SUPPRESS)  # internal: run one part, print its JSON row
    args = p.parse_args(argv)
    if args.part:
        name, *rest = args.part
        fn = dict(peak=part_peak, flops=part_flops, ours=part_ours, diffusers=part_diffusers, train=part_train)[name]
        print(json.dumps(fn(args.smoke, *rest)))
        return
    started = time.perf_counter()
    batches = [str(b) for b in args.train_batch or [configs(args.smoke)[5]["batch"]]]

    def run(*part):
        left = args.budget - (time.perf_counter() - started)
        return run_part(list(part), args.smoke, min(args.part_timeout, left), args.log)

    def save(rows):  # after every part: a suite stopped from outside still leaves what it measured
        with open(args.json, "w") as fh:
            json.dump(dict(peak=peak_row, rows=rows, smoke=args.smoke), fh, indent=1)

    flops_args = ["flops", *batches]  # CPU-only: counts beside the device parts
    flops_proc = start_part(flops_args, args.smoke)
    peak_row, rows = run("peak"), []
    first, *rest = args.kernels
    train = [("train", "off", b, *([args.profile] if args.profile and i == 0 else [])) for i, b in enumerate(batches)]
    parts = [("ours", first), ("diffusers",), *train, ("remat", "on", batches[0]), *(("ours", k) for k in rest)]
    for part in (p for p in parts if p[0] in args.parts):
        rows.append(run("train", *part[1:]) if part[0] == "remat" else run(*part))
        print(f"[{time.perf_counter() - started:.0f} s] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        save(rows)
    left = args.budget - (time.perf_counter() - started)
    flops = finish_part(flops_proc, flops_args, None if left == float("inf") else max(30.0, left), args.log)
    for r in rows:
        if "error" not in r:
            r["tflop"] = (flops.get("sample_tflop") if r["part"] == "sample"
                          else flops.get("train_tflop", {}).get(str(r["batch"])))
    save(rows)
    peak = peak_row.get("peak_tflops")
    ref = next((r for r in rows if r.get("impl") == "diffusers SDPA" and "error" not in r), None)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, device {peak_row.get('device', '?')}, measured "
          f"bf16 matmul peak {'n/a' if peak is None else f'{peak:.3g}'} TFLOP/s, "
          f"{'SMOKE (tiny configs)' if args.smoke else 'SD1.5 + v2, 16x512², 25 DDIM steps, CFG; train 16x256²'}\n")
    print(table(rows, peak))
    if ref:
        for r in rows:
            if r.get("impl", "").startswith("ours") and r.get("part") == "sample" and "error" not in r:
                print(f"{r['impl']}: {ref['s_per_video'] / r['s_per_video']:.2f}x diffusers")
    print(f"suite wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
