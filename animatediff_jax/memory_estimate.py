"""The peak memory of a sample run, estimated from the models' configs and the run's settings before
any weight loads or anything compiles (`estimate`), and whether it exceeds the memory available
(`shortfall`: the host's MemAvailable or its container's cgroup limit, an accelerator's free memory).

The estimate adds up the dominant buffers, in bytes, each from a small function here:

* `weight_bytes`: every parameter (UNet + motion module, VAE, text encoder) in the compute dtype; on
  CPU, XLA also keeps copies of the UNet's among the step's temporaries (`CPU_WEIGHT_COPY`).
* `unet_activations`: one UNet call (one denoising step: classifier-free guidance doubles its batch;
  context windows of scope "unet" give it one window of frames) holds about `UNET_LIVE` x
  (layers_per_block + 1) tensors the size of its largest level's, batch·frames·h·w·channels where
  that product peaks (skip connections, the concatenations of the up blocks, the GEGLU feed-forward's
  8x-wide projection, the motion module's transposes).
* `attention_scores`: an attention that the `xla` kernel runs materialises (rows, heads, Lq, Lk)
  float32 scores and their softmax in the compute dtype: spatial self-attention (B·F, heads, h·w,
  h·w), cross-attention (B, heads, F·h·w, text tokens), the motion module's (B·h·w·windows, heads,
  F, F), the VAE's mid-block (chunk, 1, h·w, h·w) at latent size. The `chunked`, `cudnn` and
  `tpu_flash` kernels hold cache-sized blocks, counted as nothing. Which kernel runs is
  `attention.resolve_implementation`'s answer for the backend, dtype and lengths (`auto` included);
  one attention runs at a time, so the largest counts.
* `vae_decode`: the decoder runs `decode_chunk` frames at once (`vae.decode_video`), holding about
  `VAE_LIVE` tensors of chunk·H·W·block_out_channels[0] at full resolution, and returns the decoded
  video (B·F·H·W·3 float32) twice over (the chunks' stack and the clipped result).
* `videos`: the run keeps every video's frames (F·H·W·3 float32; an --init-video's too) until it
  draws the grid at the end, when it stacks them once more.
* `RUNTIME`: Python, the JAX runtime and XLA's compiler (host).

Activations count at 4 bytes on CPU whatever the dtype (XLA:CPU computes bfloat16 convolutions and
matmuls in float32). The sampler's latents (4 channels), ControlNets and SparseCtrl encoders are not
counted. On CPU all of it is host memory; with an accelerator the weights and the step's and the
decode's buffers are the device's, the videos and the runtime the host's, each compared with what
that side has.

Calibration. XLA:CPU's own `memory_analysis()` of the compiled programs (temporaries): the
miniature's step at 16 x 256² (CFG, float32, auto attention) 304 MiB, estimated 320; with `--attention
xla` at 16 x 128² 1056 MiB (the 512 MiB of spatial scores twice: scores and softmax), estimated 1088;
its decode of 16 frames at 256² 205 MiB, estimated 248. SD1.5 + v2 at 16 x 512² (BENCHMARKS.md,
float32): the step with chunked attention 5.51 GiB, estimated 5.8 (3.8 of activations, 2.0 of weight
copies); with xla attention 20.38 GiB, estimated 37.8: there XLA reuses the 16 GiB scores' buffer for
the softmax, which the estimate counts apart (an overestimate, on the side of refusing); the decode
in chunks of 4, 3.55 GiB, estimated 3.6. Peak RSS of real runs of the miniature (`python -m
animatediff_jax.sample --steps 2 --prompt "a red circle moving right" --width S --height S --frames F`,
/usr/bin/time -v; 2026-12-02, the shared 2-core CPU VM under load, jax 0.10.2, float32), MiB:

    run                           measured  estimated
    64² x 8                            660        643
    64² x 16                           680        649
    128² x 8                           711        690
    128² x 16                          762        714
    256² x 8                           894        876
    256² x 16                         1036        972
    128² x 16, --attention xla        1761       1722
    default (4 videos), 32² x 16       639        637
    default (4 videos), 256² x 16     1086       1044

i.e. 0.94-1.00 of the measured peak; of the part above the runtime's 0.6 GiB, 0.53-0.77 at 64² and
128² (allocator and compiler slack) and 0.85-0.97 from 256² on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from animatediff_jax.models.attention import resolve_implementation
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig
from animatediff_jax.models.frame_windows import context_windows
from animatediff_jax.models.unet3d import DOWN_BLOCKS, UP_BLOCKS
from animatediff_jax.sampling.context_windows import ContextOptions

GIB = 2**30
# Tensors of the largest level's size live in one UNet call, per (layers_per_block + 1): XLA's analysis
# (module docstring) gives 15 + scores for the miniature (1 layer per block), 24 for SD1.5 (2 layers).
UNET_LIVE = 8
VAE_LIVE = 7  # tensors of chunk·H·W·block_out_channels[0] live in the decoder (SD1.5: 0.88 GiB per 512² frame)
# Bytes per parameter that XLA:CPU keeps among the step's temporaries, by compute itemsize (BENCHMARKS.md, the
# SD1.5 step at 2 x 64²: 1.72 GiB in float32, 0.35 x the UNet's weights; 4.88 GiB in bfloat16, float32 copies).
CPU_WEIGHT_COPY = {4: 0.35 * 4, 2: 4}
RUNTIME = int(0.6 * GIB)  # Python + JAX + XLA: the default miniature run (16 x 32², 4 videos) peaks at 0.62 GiB RSS
SCORE_BYTES = 4  # the xla kernel's scores are float32 whatever the dtype (its probabilities: the compute dtype)
RGB_BYTES = 3 * 4  # a decoded pixel: RGB float32


@dataclass(frozen=True)
class Platform:
    """Where the run computes: JAX's backend ("cpu", "gpu", "tpu"), the GPU's compute capability
    ("9.0"; None elsewhere) and the device count (what `attention.select_implementation` reads)."""
    backend: str
    compute_capability: str | None = None
    devices: int = 1


def current_platform() -> Platform:
    """The platform JAX computes on in this process."""
    device = jax.devices()[0]
    return Platform(jax.default_backend(), getattr(device, "compute_capability", None), jax.device_count())


@dataclass(frozen=True)
class Models:
    """The configs of one job's networks, and how many parameters they hold (`loading.parameter_count`)."""
    unet: UNetConfig
    motion: MotionConfig | None
    vae: VAEConfig
    text: CLIPTextConfig
    parameters: int


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of a run's dominant buffers (module docstring). `unet` and `decode` include
    their largest attention's scores (`unet_scores`, `decode_scores`)."""
    weights: int
    unet: int
    unet_scores: int
    decode: int
    decode_scores: int
    videos: int

    @property
    def device(self) -> int:
        """What the accelerator holds at the peak (on CPU: the host): weights + the larger program."""
        return self.weights + max(self.unet, self.decode)

    @property
    def host(self) -> int:
        """What the host holds besides `device`: the runtime and the videos, twice while the grid is drawn."""
        return RUNTIME + 2 * self.videos

    def parts(self) -> str:
        """`weights 0.0, denoising step 3.1 (attention scores 2.0), VAE decode 1.2, videos 0.1 GiB`."""
        def scores(b: int) -> str:
            return f" (attention scores {b / GIB:.1f})" if b >= 0.05 * GIB else ""
        return (f"weights {self.weights / GIB:.1f}, denoising step {self.unet / GIB:.1f}{scores(self.unet_scores)}, "
                f"VAE decode {self.decode / GIB:.1f}{scores(self.decode_scores)}, "
                f"videos {2 * self.videos / GIB:.1f} GiB")


def combined(estimates: list[Estimate]) -> Estimate:
    """A run of several jobs (one after another): the largest job's buffers, every job's videos."""
    big = max(estimates, key=lambda e: e.device)
    return Estimate(big.weights, big.unet, big.unet_scores, big.decode, big.decode_scores,
                    sum(e.videos for e in estimates))


def estimate(models: Models, *, batch: int, cfg: bool, frames: int, height: int, width: int,
             context: ContextOptions | None, decode_chunk: int, dtype: str, attention: str, platform: Platform,
             videos: int) -> Estimate:
    """The `Estimate` of sampling `videos` videos of `frames` x `height` x `width` pixels, `batch` per
    call (cfg: classifier-free guidance, the UNet's batch doubled), with `context` windows (or None),
    `decode_chunk` frames per VAE call, in `dtype` ("float32", "bfloat16") with the `attention`
    implementation (`attention.IMPLEMENTATIONS`) on `platform`. Sizes must fit the models
    (`pipeline.check_video_size`)."""
    itemsize = jnp.dtype(dtype).itemsize
    act = 4 if platform.backend == "cpu" else itemsize
    f = models.vae.downsample_factor
    h, w = height // f, width // f
    rows = batch * (2 if cfg else 1)
    seen = frames if context is None or context.scope == "motion" else min(context.length, frames)

    def scores(rows: int, heads: int, lq: int, lk: int, head_dim: int) -> int:
        kernel = resolve_implementation(attention, platform.backend, dtype, lq, lk, head_dim,
                                        platform.compute_capability, platform.devices)[0]
        return attention_scores(rows, heads, lq, lk, kernel, act)
    unet_scores = max(unet_attention_scores(models, rows=rows, frames=seen, h=h, w=w, context=context, scores=scores))
    chunk = min(decode_chunk, batch * frames)
    decode_scores = scores(chunk, 1, h * w, h * w, models.vae.block_out_channels[-1])
    return Estimate(
        weights=weight_bytes(models.parameters, itemsize, platform),
        unet=unet_activations(models.unet, rows=rows, frames=seen, h=h, w=w, itemsize=act) + unet_scores,
        unet_scores=unet_scores,
        decode=vae_decode(models.vae, chunk=chunk, frames=batch * frames, height=height, width=width, itemsize=act)
        + decode_scores,
        decode_scores=decode_scores,
        videos=videos * frames * height * width * RGB_BYTES)


def weight_bytes(parameters: int, itemsize: int, platform: Platform) -> int:
    """Bytes of `parameters` weights of `itemsize` bytes, with XLA:CPU's copies (`CPU_WEIGHT_COPY`) on CPU."""
    return int(parameters * (itemsize + (CPU_WEIGHT_COPY[itemsize] if platform.backend == "cpu" else 0)))


def levels(unet: UNetConfig, h: int, w: int) -> list[tuple[int, int, int, bool]]:
    """(latent pixels, channels, spatial heads, has spatial attention) of each UNet level, top first
    (each down block halves the size, rounding up; the mid block attends at the lowest level)."""
    n = len(unet.block_out_channels)
    return [((-(-h // 2**i)) * (-(-w // 2**i)), unet.block_out_channels[i], unet.heads(i),
             DOWN_BLOCKS[unet.down_block_types[i]] or UP_BLOCKS[unet.up_block_types[n - 1 - i]] or i == n - 1)
            for i in range(n)]


def unet_activations(unet: UNetConfig, *, rows: int, frames: int, h: int, w: int, itemsize: int) -> int:
    """Bytes live in one UNet call on (rows, frames, h, w) latents: `UNET_LIVE` x (layers_per_block + 1)
    tensors of its largest level."""
    largest = max(pixels * channels for pixels, channels, _, _ in levels(unet, h, w))
    return UNET_LIVE * (unet.layers_per_block + 1) * rows * frames * largest * itemsize


def unet_attention_scores(models: Models, *, rows: int, frames: int, h: int, w: int,
                          context: ContextOptions | None, scores) -> list[int]:
    """Bytes of each UNet attention's scores, `scores(rows, heads, lq, lk, head_dim)` (`attention_scores`
    with the kernel that runs), per level: spatial self-attention, cross-attention to the text, the
    motion module's over frames."""
    tokens = models.text.max_position_embeddings
    motion = models.motion
    windows, length = 1, frames  # the motion module's attention: windows of `length` frames (scope "motion")
    if context is not None and context.scope == "motion":
        windows, length = context_windows(frames, context.length, context.stride).shape
    out = [0]
    for pixels, channels, heads, attends in levels(models.unet, h, w):
        if attends:
            out.append(scores(rows * frames, heads, pixels, pixels, channels // heads))
            out.append(scores(rows, heads, frames * pixels, tokens, channels // heads))
        if motion is not None:
            heads = motion.num_attention_heads
            out.append(scores(rows * pixels * windows, heads, length, length, channels // heads))
    return out


def attention_scores(rows: int, heads: int, lq: int, lk: int, kernel: str, itemsize: int) -> int:
    """Bytes of the (rows, heads, lq, lk) float32 scores and their softmax (`itemsize` bytes each) that
    the "xla" kernel materialises; 0 for the others."""
    return rows * heads * lq * lk * (SCORE_BYTES + itemsize) if kernel == "xla" else 0


def vae_decode(vae: VAEConfig, *, chunk: int, frames: int, height: int, width: int, itemsize: int) -> int:
    """Bytes of the VAE decode of `frames` frames, `chunk` at a time: `VAE_LIVE` full-resolution
    tensors per frame of a chunk, and the decoded frames (float32 RGB) twice."""
    return (VAE_LIVE * chunk * vae.block_out_channels[0] * itemsize + 2 * frames * RGB_BYTES) * height * width


def host_available(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int | None:
    """The host's available memory in bytes: MemAvailable of `meminfo` (Linux), lowered to what the
    process's memory cgroup still allows (a container's limit: cgroup v2 `memory.max` - `memory.current`,
    or v1 `memory/memory.limit_in_bytes` - `memory/memory.usage_in_bytes`); None where unknown."""
    try:
        with open(meminfo, encoding="ascii") as f:
            free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        free = None
    room = cgroup_room(cgroup)
    return room if free is None else free if room is None else min(free, room)


def cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the memory cgroup at `root` still allows (limit - usage; v2 files, else v1's); None where
    there is no limit ("max", v1's huge sentinel) or no such files."""
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            with open(os.path.join(root, limit), encoding="ascii") as f:
                text = f.read().strip()
            with open(os.path.join(root, usage), encoding="ascii") as f:
                used = int(f.read())
        except (OSError, ValueError):
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:
            return None
        return max(int(text) - used, 0)
    return None


def device_available() -> int | None:
    """Free bytes of the first accelerator (its allocator's bytes_limit - bytes_in_use); None on CPU
    or where JAX reports no limit."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None


def program_bytes(compiled) -> int | None:
    """Bytes one device allocates while it runs a compiled program (`jax.stages.Compiled`), on top of
    its arguments, which are in memory before the call: XLA's `memory_analysis()` outputs (less those
    aliasing donated arguments), temporaries and generated code. None where the backend gives no analysis."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return (stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
            + stats.generated_code_size_in_bytes)


def shortfall(est: Estimate, platform: Platform) -> tuple[int, int, str] | None:
    """(bytes needed, bytes available, which memory) where the estimate exceeds what is available,
    else None (also where nothing says what is available)."""
    host = host_available()
    if platform.backend == "cpu":
        needs = [(est.device + est.host, host, "host memory")]
    else:
        needs = [(est.device, device_available(), f"{platform.backend.upper()} memory"),
                 (est.host, host, "host memory")]
    return next(((need, have, what) for need, have, what in needs if have is not None and need > have), None)
