"""Text-to-video sampling: prompts -> CLIP embeddings -> jitted denoising loop -> chunked VAE decode.

    pipe = loading.load_pipeline(base="models/sd15", dreambooth="toonyou.safetensors",
                                 motion_module="mm_sd_v15_v2.ckpt")       # files: animatediff_jax.loading
    video = pipe(["a cat walking"], seeds=[42], width=512, height=512, frames=16)  # (1, 16, 512, 512, 3)

Three jitted functions do the work, each compiled once per shape and kept in JAX's persistent
compilation cache (`enable_compilation_cache`): text encoding, one denoising step (the step index
is an argument, so every step of a sampler runs the same executable; classifier-free guidance as
one doubled batch, optional context windows), and the VAE decode (frames in chunks under
`lax.map`). A Python loop calls the step with the latents and the sampler state staying on the
device; with a progress bar it waits for each step before advancing the bar, so the bar is truthful
and the executables hold no host callbacks (which JAX would refuse to cache).

Latents are (B, F, h, w, 4) with h, w = H/8, W/8; `latents=` accepts diffusers' (B, 4, F, h, w)
layout via `from_diffusers_latents`. Every random draw of a video (initial noise, the stochastic
samplers' per-step noise, the VAE posterior sample of video-to-video, FreeInit's fresh noise) comes
from its own seed (`seed_stream`), so the same seed gives the same video whatever else is in the batch.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.errors import UsageError
from animatediff_jax.models import vae as vae_lib
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.init import example_inputs, random_params
from animatediff_jax.models.unet3d import UNet3DConditionModel, motion_scales
from animatediff_jax.params import cache_root
from animatediff_jax.progress import progress_bar
from animatediff_jax.sampling import context_windows as ctx, control as cn, freeinit as fi
from animatediff_jax.sampling.program_cache import DiskCachedProgram
from animatediff_jax.sampling.prompt_travel import interpolate_embeddings, parse_prompt_map
from animatediff_jax.sampling.samplers import (Sampler, denoising_steps, make_sampler, sampler_from_diffusers_config,
                                               start_index)
from animatediff_jax.scale_limits import GUIDANCE, scale_problem
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.xla_options import jit


# ----------------------------------------------------------------------------- environment

def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache so a second run skips XLA compilation: `path`, else
    $JAX_COMPILATION_CACHE_DIR, else $ANIMATEDIFF_JAX_CACHE/jax_cache (~/.cache/animatediff_jax/jax_cache).
    Every program is written, however fast it compiled (JAX's default skips those under a second, but
    the small ones — text encoding, VAE decode — still cost ~0.6 s each per run to recompile), unless
    $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise. A folder that cannot be created (e.g.
    the cache root lies under a file) leaves the cache off with one warning; returns None then."""
    path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or \
        os.path.join(cache_root(), "jax_cache")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compilation cache {path}: cannot create it ({e.strerror or e}); every run compiles anew",
                      stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def default_dtype() -> str:
    """bfloat16 on GPU/TPU, float32 on CPU."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def seed_key(seed: int) -> np.ndarray:
    """A threefry key (2,) uint32 for any seed in [0, 2**64) (the original's seeds use all 64 bits)."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    seed = int(seed)
    return np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)


def from_diffusers_latents(latents) -> np.ndarray:
    """diffusers' (B, 4, F, h, w) -> ours (B, F, h, w, 4)."""
    latents = np.asarray(latents)
    if latents.ndim != 5:
        raise ValueError(f"latents must be 5-D (batch, channels, frames, h, w), got shape {latents.shape}")
    return np.transpose(latents, (0, 2, 3, 4, 1))


# The random streams of a video, each derived from its seed alone (`seed_stream`).
NOISE, STEPS, POSTERIOR, KEY_IMAGES, FREEINIT = 0, 1, 2, 3, 10  # FreeInit pass k: stream FREEINIT + k
# KEY_IMAGES, folded with n: the VAE posterior sample of the SparseCtrl key images of controlnets[n]


# The two below are jitted rather than run eagerly so that the persistent compilation cache serves
# them: eagerly, their few ops compile anew at every start-up of the sampler (~0.3 s each).
@jax.jit
def _fold_in(keys: jax.Array, stream: jax.Array) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, stream)


@functools.partial(jax.jit, static_argnums=2)
def _normal(keys: jax.Array, stream: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(_fold_in(keys, stream))


def seed_stream(seeds: Sequence[int], stream: int) -> jax.Array:
    """One key per video, (B, 2) uint32: stream `stream` of each seed."""
    return _fold_in(np.stack([seed_key(s) for s in seeds]), np.uint32(stream))


def stream_noise(seeds: Sequence[int], stream: int, shape: tuple[int, ...]) -> jax.Array:
    """N(0, I) noise (B, *shape) from stream `stream` of each seed."""
    return _normal(np.stack([seed_key(s) for s in seeds]), np.uint32(stream), tuple(shape))


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> jax.Array:
    """The initial N(0, I) noise (B, *shape), one independent stream per seed."""
    return stream_noise(seeds, NOISE, shape)


# ----------------------------------------------------------------------------- jitted pieces

def guided_eps(model: Callable, x: jax.Array, t: jax.Array, emb: jax.Array, guidance_scale: jax.Array,
               cfg: bool) -> jax.Array:
    """Classifier-free guided model output. x (B, F, h, w, c); emb (2B, ...) [uncond; cond] if cfg;
    model(x, timesteps (N,), emb) the network (UNet, with its ControlNets).

    With cfg the model runs once on the doubled batch [x; x]."""
    b = x.shape[0]
    if not cfg:
        return model(x, jnp.full((b,), t), emb)
    out = model(jnp.concatenate([x, x]), jnp.full((2 * b,), t), emb)
    uncond, cond = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
    return (uncond + guidance_scale * (cond - uncond)).astype(x.dtype)


def select_frames(emb: jax.Array, idx: jax.Array) -> jax.Array:
    """Embeddings for the frames `idx`: per-video (N, T, D) pass through; per-frame (N, F, T, D) are sliced."""
    return emb if emb.ndim == 3 else jnp.take(emb, idx, axis=1)


def motion_scaled_params(unet_params, unet: UNet3DConditionModel, motion_scale: float = 1.0,
                         motion_block_scales: Mapping[str, float] | None = None):
    """The UNet's params with each motion module's residual multiplied by `motion_scale` times its
    block's factor in `motion_block_scales` ({"down_blocks_0": 0.5, "mid_block": 1.2, ...}; default 1):
    ComfyUI's "motion scale". The residual is `proj_out(h)`, linear, so scaling proj_out's kernel and
    bias is the model's `motion_scale` (`unet3d.motion_scales`, the one home of the rule) as data: a
    new scale is a new argument, not a new executable. Factors of 1 leave the tree untouched (bit for
    bit today's UNet); 0 is the frame-wise UNet. UsageError for a non-finite factor, a block the UNet
    does not have, or a factor ≠ 1 where no motion module is (no module at all, or a mid block without one)."""
    factors = check_motion_scales(unet, motion_scale, motion_block_scales)
    if all(f == 1.0 for f in factors.values()):
        return unet_params

    def scaled(module):
        out = dict(module["proj_out"])
        return {**module, "proj_out": {k: (jnp.asarray(v, jnp.float32) * factor).astype(v.dtype)
                                       for k, v in out.items()}}

    params = dict(unet_params)
    for block, factor in factors.items():
        if factor != 1.0:
            params[block] = {k: scaled(v) if k.startswith("motion_modules") else v
                             for k, v in params[block].items()}
    return params


def check_motion_scales(unet: UNet3DConditionModel, motion_scale: float = 1.0,
                        motion_block_scales: Mapping[str, float] | None = None) -> dict[str, float]:
    """{block: factor} for the blocks that hold motion modules (see `motion_scaled_params`), checked."""
    try:
        factors = motion_scales(unet.config, motion_scale, tuple((motion_block_scales or {}).items()))
    except ValueError as e:
        raise UsageError(f"motion_scale/motion_block_scales: {str(e).removeprefix('motion_block_scales: ')}") \
            from None
    if unet.motion is None:
        without = set(factors)
    else:
        without = set() if unet.motion.use_mid_block else {"mid_block"}
    idle = sorted(b for b in without if factors[b] != 1.0)
    if idle:
        raise UsageError(f"motion_scale/motion_block_scales: {', '.join(idle)} "
                         f"{'has' if len(idle) == 1 else 'have'} no motion module to scale"
                         + (" (no motion module loaded)" if unet.motion is None else
                            " (this motion module has no mid-block module: v1 and v3 have none)"))
    return {b: f for b, f in factors.items() if b not in without}


def denoise_step(unet: UNet3DConditionModel, sampler: Sampler, params, x: jax.Array, state, i: jax.Array,
                 emb: jax.Array, guidance_scale: jax.Array, keys: jax.Array, control: tuple = (), *, cfg: bool,
                 context: ctx.ContextOptions | None, networks: tuple = ()):
    """Sampler step `i` (traced) from latents x (B, F, h, w, c): returns (x_next, state).

    keys (B, 2): each video's sampler stream; step i draws its noise (stochastic samplers) from
    fold_in(key, i), per video. networks: ControlNet modules (static), control: their
    `control.ControlArgs` (traced), whose residuals the UNet adds (`control.residuals`)."""
    t = sampler.timestep(i)
    if context is not None and context.scope == "motion":  # windows inside the motion modules only
        unet, context = unet.clone(motion_window=context.motion_window()), None

    def window_fn(xw, idx):
        def model(xm, tm, em):
            down, mid = cn.residuals(networks, control, xm, tm, em, i, idx)
            extra = {} if down is None else dict(down_block_additional_residuals=down,
                                                 mid_block_additional_residual=mid)
            return unet.apply({"params": params}, xm, tm, em, **extra)
        return guided_eps(model, xw, t, select_frames(emb, idx), guidance_scale, cfg)

    xs = sampler.scale_model_input(x, i)
    out = window_fn(xs, jnp.arange(xs.shape[1])) if context is None else ctx.windowed(window_fn, xs, context)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i) if sampler.stochastic else None
    return sampler.step(state, i, out, x, step_keys)


_JITTED: dict = {}  # compiled functions, shared by pipelines whose networks are configured alike
DECODE_CHUNK = 4  # frames the VAE decodes (and encodes) at once unless told (AnimateDiffPipeline's docstring)


def cast_leaf(a, dtype) -> np.ndarray | jax.Array:
    """One parameter array in `dtype` if it is floating point (other dtypes unchanged). Host (numpy)
    arrays are cast on the host: casting them with jnp would compile one conversion per distinct
    shape, ~60 small programs and ~0.5 s at every start-up of the sampler."""
    if isinstance(a, jax.Array):
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    a = np.asarray(a)
    return a.astype(dtype, copy=False) if jnp.issubdtype(a.dtype, jnp.floating) else a


def _jitted(key: tuple, build: Callable) -> DiskCachedProgram:
    """The jitted function for `key` = (name, network modules + static options...), built once per
    process, its traced program kept on disk for later runs (`program_cache`; `repr(key)` describes
    what the trace closes over)."""
    if key not in _JITTED:
        _JITTED[key] = DiskCachedProgram(key[0], repr(key[1:]), build())
    return _JITTED[key]


class SamplingStopped(Exception):
    """A sampling run given `stop=` found it true after a denoising step (training's validation on SIGTERM)."""


@dataclass
class GenerationResult:
    """Frames (B, F, H, W, 3) float32 in [0, 1], the seeds used and the final latents (B, F, h, w, 4)."""
    frames: np.ndarray
    seeds: list[int]
    latents: np.ndarray


class AnimateDiffPipeline:
    """Build once (`build` from configs and params, `random`, the constructor; from files:
    `animatediff_jax.loading.load_pipeline`), call many times with prompts, seeds and sizes.

    unet / vae / text_encoder are the Flax modules (`UNet3DConditionModel`, `AutoencoderKL`,
    `CLIPTextModel`), *_params their parameter trees, tokenizer a `PromptTokenizer`,
    scheduler_config a diffusers scheduler config dict (the base model's, or the original's).
    decode_chunk_size: frames the VAE decodes (and encodes) at once; 4 keeps a 16x512x512 SD1.5 sample
    within 8 GB by XLA's estimate (BENCHMARKS.md, `benchmarks/sample_memory.py`; ~0.8 GiB per frame).
    """

    def __init__(self, unet, unet_params, vae, vae_params, text_encoder, text_params, tokenizer,
                 scheduler_config: Mapping[str, Any] | None = None, scheduler: str | None = "ddim",
                 clip_skip: int = 0, decode_chunk_size: int = DECODE_CHUNK,
                 description: Mapping[str, Any] | None = None):
        self.unet, self.unet_params = unet, unet_params
        self.vae, self.vae_params = vae, vae_params
        self.text_encoder, self.text_params = text_encoder, text_params
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config or {})
        self.scheduler = scheduler
        self.clip_skip = clip_skip
        self.decode_chunk_size = decode_chunk_size
        self.description = dict(description or {})

    @classmethod
    def build(cls, unet_config, motion_config, vae_config, text_config, unet_params, vae_params, text_params,
              tokenizer, *, dtype: str | None = None, attention_impl: str = "auto", **kwargs
              ) -> "AnimateDiffPipeline":
        """From configs and parameter trees. dtype: compute and parameter dtype (default: bfloat16 on
        GPU/TPU, float32 on CPU); kwargs go to the constructor (scheduler, scheduler_config, ...)."""
        dt = jnp.dtype(dtype or default_dtype())
        kw = dict(dtype=dt, param_dtype=dt)
        unet = UNet3DConditionModel(unet_config, motion_config, attention_impl=attention_impl, **kw)
        vae = vae_lib.AutoencoderKL(vae_config, implementation=attention_impl, **kw)
        text = CLIPTextModel(text_config, **kw)
        cast = lambda tree: jax.device_put(jax.tree.map(functools.partial(cast_leaf, dtype=dt), tree))  # noqa: E731
        pipe = cls(unet, cast(unet_params), vae, cast(vae_params), text, cast(text_params), tokenizer, **kwargs)
        pipe.description.setdefault("dtype", str(dt))
        pipe.description.setdefault("attention", attention_impl)
        return pipe

    @classmethod
    def random(cls, unet_config, motion_config, vae_config, text_config, tokenizer, *, seed: int = 0,
               dtype: str | None = None, attention_impl: str = "auto", **kwargs) -> "AnimateDiffPipeline":
        """Random (Flax default-initialised) weights at the given configs: for demos and benchmarks."""
        nets = (UNet3DConditionModel(unet_config, motion_config), vae_lib.AutoencoderKL(vae_config),
                CLIPTextModel(text_config))
        unet_p, vae_p, text_p = (random_params(net, seed + i, *example_inputs(net)) for i, net in enumerate(nets))
        return cls.build(unet_config, motion_config, vae_config, text_config, unet_p, vae_p, text_p, tokenizer,
                         dtype=dtype, attention_impl=attention_impl, **kwargs)

    # ---------------------------------------------------------------- properties
    @property
    def max_frames(self) -> int:
        """Frames the motion module sees at once (its position-encoding length)."""
        return self.unet.motion.max_seq_length if self.unet.motion is not None else 10**9

    @property
    def vae_scale(self) -> int:
        return self.vae.config.downsample_factor

    def make_sampler(self, steps: int, strength: float = 1.0, eta: float = 0.0) -> Sampler:
        """The configured sampler for `steps` steps (base model's scheduler config honoured)."""
        return configured_sampler(self.scheduler_config, self.scheduler, steps, strength, eta)

    # ---------------------------------------------------------------- validation (no compilation)
    def check_inputs(self, *, width: int, height: int, frames: int, steps: int,
                     context: ctx.ContextOptions | None, num_prompts: int, num_seeds: int | None,
                     motion_scale: float = 1.0, motion_block_scales: Mapping[str, float] | None = None,
                     controlnets: Sequence[cn.Control] = (), strength: float = 1.0,
                     guidance_scale: float = 7.5) -> None:
        """Every size/count/setting error, raised before anything is traced or compiled (`strength`: of
        video-to-video, which runs fewer steps, 1.0 without an init video; scales within `scale_limits`)."""
        if (problem := scale_problem(guidance_scale, GUIDANCE)) is not None:
            raise UsageError(f"guidance_scale: {problem}")
        check_video_size(width=width, height=height, frames=frames, steps=steps, context=context,
                         vae_scale=self.vae_scale, max_frames=self.max_frames)
        if num_prompts < 1:
            raise UsageError("no prompt given")
        if num_seeds is not None and num_seeds != num_prompts:
            raise UsageError(f"{num_seeds} seeds for {num_prompts} prompts")
        check_motion_scales(self.unet, motion_scale, motion_block_scales)
        if controlnets:
            cn.check_controls(controlnets, batch=num_prompts, frames=frames, width=width, height=height,
                              window=frames if context is None else min(context.length, frames),
                              steps=denoising_steps(steps, strength),
                              cross_attention_dim=self.unet.config.cross_attention_dim,
                              latent_channels=self.vae.config.latent_channels, vae_scale=self.vae_scale)

    # ---------------------------------------------------------------- jitted functions
    def encode_text(self, prompts: Sequence[str]) -> jax.Array:
        """CLIP embeddings (N, 77, D) of prompts (one jitted call)."""
        ids = jnp.asarray(self.tokenizer(list(prompts)))
        text, skip = self.text_encoder, self.clip_skip
        fn = _jitted(("text_encode", text, skip), lambda: jit(
            lambda p, ids: text.apply({"params": p}, ids, clip_skip=skip)[0]))
        return fn(self.text_params, ids)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents (B, F, h, w, 4) -> frames (B, F, H, W, 3) in [0, 1], `decode_chunk_size` frames at a time."""
        vae, chunk = self.vae, self.decode_chunk_size
        fn = _jitted(("vae_decode", vae, chunk), lambda: jit(
            lambda p, z: jnp.clip(vae_lib.decode_video(vae, p, z, chunk) / 2 + 0.5, 0.0, 1.0)))
        return fn(self.vae_params, latents)

    def encode_video(self, video: np.ndarray, keys: jax.Array) -> jax.Array:
        """Frames (1 or B, F, H, W, 3) in [0, 1] -> scaled latents (B, F, h, w, 4) for B = len(keys):
        each video's latents sampled from the posterior with its own key (B, 2)."""
        vae, chunk = self.vae, self.decode_chunk_size
        fn = _jitted(("vae_encode", vae, chunk), lambda: jit(
            lambda p, v: vae_lib.encode_video_moments(vae, p, v * 2 - 1, chunk)))
        mean, logvar = fn(self.vae_params, jnp.asarray(video, jnp.float32))  # (1 or B, F, h, w, 4) each
        mean, logvar = (jnp.broadcast_to(m, (keys.shape[0],) + m.shape[1:]) for m in (mean, logvar))
        z = jax.vmap(vae_lib.sample_latent)(keys, mean, logvar)
        return z * vae.config.scaling_factor

    def step_function(self, sampler: Sampler, cfg: bool, context: ctx.ContextOptions | None,
                      networks: tuple = ()) -> Callable:
        """The jitted `denoise_step` (params, x, state, i, emb, guidance_scale, keys, control) -> (x, state),
        compiled once per sampler, shapes, options and ControlNet modules (`networks`)."""
        unet = self.unet
        sig = (sampler.name, sampler.num_steps, repr(sorted(sampler.options.items())), sampler.fingerprint(), cfg,
               context, networks)

        def unet_denoise_step(p, x, s, i, e, g, k, c=()):  # the name JAX's cache logs show
            return denoise_step(unet, sampler, p, x, s, i, e, g, k, c, cfg=cfg, context=context, networks=networks)
        return _jitted(("unet_denoise_step", unet) + sig, lambda: jit(unet_denoise_step))

    def denoise(self, sampler: Sampler, x: jax.Array, emb: jax.Array, guidance_scale: float, keys: jax.Array,
                *, context: ctx.ContextOptions | None = None, progress: bool = True, label: str = "denoising",
                unet_params=None, controls: Sequence[tuple[cn.ControlNet, cn.ControlArgs]] = (),
                stop: Callable[[], bool] | None = None) -> jax.Array:
        """All steps of `sampler` from x (already scaled to its first step); returns clean latents.
        keys (B, 2): each video's sampler stream. progress: a tqdm bar advanced after each finished step.
        stop: asked after each finished step; SamplingStopped when it says True.
        unet_params: the UNet's params for this call (default `self.unet_params`; `motion_scaled_params`).
        controls: (network, its ControlArgs) pairs (`control_args`)."""
        unet_params = self.unet_params if unet_params is None else unet_params
        cfg = emb.shape[0] == 2 * x.shape[0]
        if context is not None and context.length >= x.shape[1]:
            context = None  # one window holding every frame is the plain step
        step = self.step_function(sampler, cfg, context, tuple(c.network for c, _ in controls))
        control = tuple(a for _, a in controls)
        g, state = jnp.float32(guidance_scale), sampler.init_state(x)
        with progress_bar(label, total=sampler.num_steps, enabled=progress, unit="step") as bar:
            for i in range(sampler.num_steps):
                x, state = step(unet_params, x, state, np.int32(i), emb, g, keys, control)
                if progress or stop is not None:
                    x.block_until_ready()
                    bar.update(1)
                if stop is not None and stop():
                    raise SamplingStopped(f"stopped after denoising step {i + 1} of {sampler.num_steps}")
        return x

    # ---------------------------------------------------------------- generation
    def __call__(self, prompts: str | Sequence[str | Mapping[int, str]],
                 negative_prompts: str | Sequence[str] | None = None, seeds: Sequence[int] | int | None = None,
                 *, width: int = 512, height: int = 512, frames: int = 16, steps: int = 25,
                 guidance_scale: float = 7.5, eta: float = 0.0, latents=None,
                 context: ctx.ContextOptions | None = None, freeinit: fi.FreeInitOptions | None = None,
                 init_video=None, strength: float = 1.0, motion_scale: float = 1.0,
                 motion_block_scales: Mapping[str, float] | None = None, controlnets: Sequence[cn.Control] = (),
                 progress: bool = True, stop: Callable[[], bool] | None = None) -> GenerationResult:
        """Generate one video per prompt.

        prompts: strings, or {frame: prompt} dicts for prompt travel. negative_prompts: one (broadcast)
        or one per prompt. seeds: one per prompt (None: random). latents: initial noise (B, F, h, w, 4)
        N(0, I) (use `from_diffusers_latents` for diffusers' layout). context: sliding windows for
        videos longer than the motion module. freeinit: FreeInit passes. init_video: (B or 1, F, H, W, 3)
        in [0, 1] for video-to-video with `strength` in (0, 1]; with FreeInit, each later pass starts
        from the low frequencies of the previous result noised to the strength's timestep and the high
        frequencies of the input video noised there with fresh noise. motion_scale: multiplier on every
        motion module's residual (1: the paper's UNet, bit for bit; 0: the frame-wise UNet; no recompilation
        for a new value), motion_block_scales: further factors per block, e.g. {"mid_block": 1.2,
        "down_blocks_0": 0.5} (`motion_scaled_params`). controlnets: `control.Control`s (ControlNets with a
        conditioning video, SparseCtrl encoders with key images; see `animatediff_jax.sampling.control`).
        stop: asked after each denoising step; when it says True, SamplingStopped is raised (nothing decoded).
        """
        prompts = [prompts] if isinstance(prompts, (str, Mapping)) else list(prompts)
        negs = [negative_prompts or ""] if negative_prompts is None or isinstance(negative_prompts, str) \
            else list(negative_prompts)
        if len(negs) == 1:
            negs = negs * len(prompts)
        if len(negs) != len(prompts):
            raise ValueError(f"{len(negs)} negative prompts for {len(prompts)} prompts")
        seeds = [seeds] if isinstance(seeds, int) else seeds
        self.check_inputs(width=width, height=height, frames=frames, steps=steps, context=context,
                          num_prompts=len(prompts), num_seeds=None if seeds is None else len(seeds),
                          motion_scale=motion_scale, motion_block_scales=motion_block_scales,
                          controlnets=controlnets, strength=strength if init_video is not None else 1.0,
                          guidance_scale=guidance_scale)
        if init_video is None and strength != 1.0:
            raise ValueError("strength < 1 needs an init video")
        travel = [parse_prompt_map(p, frames) if isinstance(p, Mapping) else None for p in prompts]
        if seeds is None:
            seeds = [int(s) for s in np.random.SeedSequence().generate_state(len(prompts), np.uint64)]
        b, h, w = len(prompts), height // self.vae_scale, width // self.vae_scale
        shape = (frames, h, w, self.unet.config.in_channels)
        if latents is not None:
            latents = jnp.asarray(latents, jnp.float32)
            if latents.shape != (b,) + shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {(b,) + shape} "
                                 "(batch, frames, h, w, channels)")
        if init_video is not None:
            init_video = np.asarray(init_video, np.float32)
            init_video = init_video[None] if init_video.ndim == 4 else init_video
            if init_video.shape[1:] != (frames, height, width, 3) or init_video.shape[0] not in (1, b):
                raise ValueError(f"init video has shape {init_video.shape}, expected (1 or {b}, {frames}, "
                                 f"{height}, {width}, 3)")
            start_index(steps, strength)  # validates strength

        emb = self._embeddings(prompts, travel, negs, frames, guidance_scale > 1)
        unet_params = motion_scaled_params(self.unet_params, self.unet, motion_scale, motion_block_scales)
        noise = latents if latents is not None else initial_noise(seeds, shape)
        if context is not None and context.shuffle_noise and latents is None:
            noise = jnp.stack([ctx.reschedule_noise(noise[i:i + 1], context, s)[0] for i, s in enumerate(seeds)])
        sampler = self.make_sampler(steps, strength if init_video is not None else 1.0, eta)
        # start(clean, n): clean latents noised to the pass's first timestep; fresh_start(n): a pass's start
        if init_video is not None:  # the input video noised to the strength's timestep
            x_video = self.encode_video(init_video, seed_stream(seeds, POSTERIOR))
            start = sampler.add_noise
            fresh_start = lambda n: sampler.add_noise(x_video, n)  # noqa: E731
        else:  # pure noise; FreeInit diffuses its clean latents to the schedule's end, t = T
            a_T, sigma = float(_schedule(sampler).alphas_cumprod[-1]), sampler.init_noise_sigma
            start = lambda clean, n: (a_T ** 0.5 * clean + (1 - a_T) ** 0.5 * n) * sigma  # noqa: E731
            fresh_start = lambda n: n * sigma  # noqa: E731
        controls = self.control_args(controlnets, seeds, frames, sampler.num_steps)
        x = fresh_start(noise)
        passes = freeinit.iterations if freeinit is not None else 1
        for k in range(passes):
            if k > 0:
                lowpass = jnp.asarray(fi.lowpass_filter(frames, h, w, freeinit))
                fresh = stream_noise(seeds, FREEINIT + k, shape)
                x = fi.reinitialize(x, noise, fresh_start(fresh), lowpass, start)
            x = self.denoise(sampler, x, emb, guidance_scale, seed_stream(seeds, STEPS), context=context,
                             progress=progress, label=f"pass {k + 1}/{passes}" if passes > 1 else "denoising",
                             unet_params=unet_params, controls=controls, stop=stop)
        video = self.decode(x)
        return GenerationResult(np.asarray(video, np.float32), list(seeds), np.asarray(x, np.float32))

    def control_args(self, controlnets: Sequence[cn.Control], seeds: Sequence[int], frames: int, num_steps: int
                     ) -> list[tuple[cn.ControlNet, cn.ControlArgs]]:
        """Each (checked) Control's network and its step arguments: the condition over the video's
        frames (SparseCtrl RGB key images VAE-encoded, each video from its own seed), the mask, the
        per-step scales."""
        out = []
        for n, c in enumerate(controlnets):
            net, scales = c.controlnet, jnp.asarray(cn.keep_schedule(c, num_steps))
            images = cn.condition(c.images, frames if net.kind == "controlnet" else len(c.keyframes))
            if net.kind == "controlnet":
                out.append((net, cn.ControlArgs(net.params, jnp.asarray(images), None, scales)))
                continue
            if net.encodes_images:
                keys = jax.vmap(lambda k, n=n: jax.random.fold_in(k, n))(seed_stream(seeds, KEY_IMAGES))
                images = self.encode_video(images, keys)
            cond, mask = cn.sparse_condition(jnp.asarray(images), cn.keyframe_indices(c.keyframes, frames), frames)
            out.append((net, cn.ControlArgs(net.params, cond, mask, scales)))
        return out

    def _embeddings(self, prompts, travel, negs, frames: int, cfg: bool) -> jax.Array:
        """[uncond; cond] embeddings (2B, T, D), or (2B, F, T, D) when any prompt travels."""
        texts = sorted({t for p, tr in zip(prompts, travel) for t in (tr[1] if tr else [p])} | set(negs))
        table = dict(zip(texts, self.encode_text(texts)))
        per_frame = any(tr is not None for tr in travel)

        def one(p, tr):
            if tr is None:
                e = table[p]
                return jnp.broadcast_to(e, (frames,) + e.shape) if per_frame else e
            return interpolate_embeddings(jnp.stack([table[t] for t in tr[1]]), tr[0], frames)

        cond = jnp.stack([one(p, tr) for p, tr in zip(prompts, travel)])
        if not cfg:
            return cond
        uncond = jnp.stack([one(n, None) for n in negs])
        return jnp.concatenate([uncond, cond])


def configured_sampler(scheduler_config: Mapping[str, Any], scheduler: str | None, steps: int,
                       strength: float = 1.0, eta: float = 0.0) -> Sampler:
    """The sampler a pipeline uses: `scheduler` (None: DDIM, or the config's class) over a diffusers
    scheduler config, or DDIM over schedule B when the config is empty. Raises ValueError for settings
    that do not go together (e.g. eta with a sampler other than DDIM)."""
    extra = {"eta": eta} if eta else {}  # DDIM only: other samplers refuse the option
    if scheduler_config:
        return sampler_from_diffusers_config(scheduler_config, scheduler, steps, strength, **extra)
    return make_sampler(scheduler or "ddim", "B", steps, strength=strength, **extra)


SIZE_NAMES = {"size": "width/height", "frames": "frames", "steps": "steps", "context": "context length"}


def check_video_size(*, width: int, height: int, frames: int, steps: int, context: ctx.ContextOptions | None,
                     vae_scale: int, max_frames: int, names: dict[str, str] = SIZE_NAMES) -> None:
    """UsageError unless the sizes fit the models: width/height positive multiples of max(8, vae_scale)
    pixels, frames and steps ≥ 1, the frames one motion-module call sees (the video, or the context
    window) ≤ max_frames (its position-encoding length). The geometry comes from the loaded configs.
    Messages start with what is wrong, named by `names` (the arguments here; the CLI passes its flags)."""
    m = max(8, vae_scale)
    if width % m or height % m or width <= 0 or height <= 0:
        raise UsageError(f"{names['size']}: must be positive multiples of {m}, got {width}x{height}")
    if frames < 1:
        raise UsageError(f"{names['frames']}: must be ≥ 1, got {frames}")
    if steps < 1:
        raise UsageError(f"{names['steps']}: must be ≥ 1, got {steps}")
    window = frames if context is None else min(context.length, frames)
    if window > max_frames:
        if context is None:
            raise UsageError(f"{names['frames']}: {frames} frames exceed the motion module's position encoding "
                             f"({max_frames} frames); use context windows (context length ≤ {max_frames}) for "
                             "longer videos")
        raise UsageError(f"{names['context']}: {context.length} exceeds the motion module's position "
                         f"encoding ({max_frames} frames)")


def _schedule(sampler: Sampler):
    """The NoiseSchedule a sampler was built over (FreeInit diffuses to its last timestep)."""
    o = sampler.options
    if "trained_betas" in o:
        return NoiseSchedule.create(trained_betas=o["trained_betas"])
    return NoiseSchedule.create(o["beta_schedule"], o["beta_start"], o["beta_end"], o["num_train_timesteps"])
