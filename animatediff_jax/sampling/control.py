"""Steering a video with ControlNets and SparseCtrl encoders: the per-call conditions and the residuals
they add to the UNet inside the jitted denoising step.

    cn = ControlNet.build(*convert.controlnet.load_controlnet("control_v11f1p_sd15_depth.pth"), dtype="float32")
    pipe(["a dancer"], controlnets=[Control(cn, depth_video, conditioning_scale=0.8)])          # every frame
    sc = ControlNet.build(*load_controlnet("v3_sd15_sparsectrl_rgb.ckpt"), dtype="float32")
    pipe(["a dancer"], controlnets=[Control(sc, key_images, keyframes=(0, 8, 15))])              # key frames

Semantics (diffusers' `AnimateDiffControlNetPipeline` / `AnimateDiffSparseControlNetPipeline`, the
original AnimateDiff v3 SparseCtrl):
- A ControlNet (2D) encodes every frame with its own control image. `images` holds one image per
  frame (F, H, W, C) or a single image (1, H, W, C), which serves every frame; with a batch
  dimension (B, ...) each video has its own. Other counts are refused (`frame_count_rule`). Images
  are floats in [0, 1] at the output size (H, W) = (height, width): preprocessing (depth, pose,
  edges, resizing) is the user's.
- A SparseCtrl encoder takes K key images (K, H, W, 3) and the frames they belong to (`keyframes`,
  K distinct indices in [0, F), or negative from the end): the condition is zero on every other
  frame and a mask channel marks the key frames. For the RGB encoder
  (`use_simplified_condition_embedding`, 4 condition channels) the key images are VAE-encoded
  latents, sampled from the posterior and scaled by the VAE's scaling factor, as the original and
  diffusers do (each video draws from its own seed); the
  scribble encoder takes the images themselves.
- `conditioning_scale` multiplies the residuals; `control_guidance_start` / `_end` (fractions of
  the steps) switch the network on only for step i with start ≤ i/N and (i+1)/N ≤ end (diffusers'
  `controlnet_keep`); several networks' residuals are summed (diffusers' MultiControlNet).
- With classifier-free guidance the residuals apply to both halves of the doubled batch (the
  networks see the negative and the positive prompt), as diffusers does. With context windows each
  window's networks see that window's control frames (and mask).
The scales, the schedule and the conditions are arguments of the compiled step: changing them
compiles nothing; the networks themselves (their configs) are part of the executable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.errors import UsageError
from animatediff_jax.models.configs import ControlNetConfig, MotionConfig
from animatediff_jax.models.controlnet import ControlNetModel, SparseControlNetModel
from animatediff_jax.scale_limits import CONDITIONING, scale_problem

KINDS = ("controlnet", "sparsectrl")


@dataclass(frozen=True, eq=False)
class ControlNet:
    """A loaded ControlNet or SparseCtrl encoder: its Flax module and parameter tree (built once,
    used by many calls). kind: "controlnet" | "sparsectrl"; source: where it was read from (messages)."""
    kind: str
    network: ControlNetModel
    params: Any
    source: str = "controlnet"

    @classmethod
    def build(cls, kind: str, config: ControlNetConfig, motion: MotionConfig | None, params, *,
              dtype: str | jnp.dtype = "float32", attention_impl: str = "auto", source: str = "controlnet"
              ) -> "ControlNet":
        """From `convert.controlnet.load_controlnet`'s (kind, config, motion config, params): the module
        in `dtype` (use the pipeline's: `pipe.description["dtype"]`), floating params cast to it."""
        if kind not in KINDS:
            raise ValueError(f"{source}: kind must be one of {KINDS}, got {kind!r}")
        dt = jnp.dtype(dtype)
        kw = dict(dtype=dt, param_dtype=dt, attention_impl=attention_impl)
        net = SparseControlNetModel(config, motion, **kw) if kind == "sparsectrl" else ControlNetModel(config, **kw)
        cast = jax.tree.map(lambda a: jnp.asarray(a, dt) if jnp.issubdtype(np.asarray(a).dtype, jnp.floating)
                            else jnp.asarray(a), params)
        return cls(kind, net, cast, source)

    @property
    def config(self) -> ControlNetConfig:
        return self.network.config

    @property
    def encodes_images(self) -> bool:
        """SparseCtrl RGB: the key images are VAE latents (the simplified embedding at latent resolution)."""
        return self.kind == "sparsectrl" and self.config.use_simplified_condition_embedding

    @property
    def max_frames(self) -> int:
        """Frames its motion modules see at once (SparseCtrl); unbounded for a (2D) ControlNet."""
        motion = getattr(self.network, "motion", None)
        return motion.max_seq_length if motion is not None else 10**9


@dataclass(frozen=True, eq=False)
class Control:
    """One network's part in one call: `images` in [0, 1] (see the module docstring for the shapes:
    a ControlNet's per-frame video, a SparseCtrl encoder's key images with `keyframes`),
    `conditioning_scale` and the guidance window [control_guidance_start, control_guidance_end]."""
    controlnet: ControlNet
    images: Any
    conditioning_scale: float = 1.0
    control_guidance_start: float = 0.0
    control_guidance_end: float = 1.0
    keyframes: Sequence[int] | None = None


def frame_count_rule(count: int, frames: int, what: str) -> None:
    """The rule for a ControlNet's conditioning video: one image per frame, or one image for all.
    UsageError naming `what` otherwise."""
    if count not in (1, frames):
        raise UsageError(f"{what}: {count} control frames for a {frames}-frame video; give one image per "
                         f"frame ({frames}) or a single image (used for every frame)")


def check_images(images, *, channels: int, batch: int, height: int, width: int, what: str) -> None:
    """A Control's images: a float array in [0, 1] (or uint8) of shape ([1 or batch,] count, height,
    width, channels). UsageError naming `what` otherwise."""
    images = np.asarray(images)
    if images.dtype == object or not (np.issubdtype(images.dtype, np.floating) or images.dtype == np.uint8):
        raise UsageError(f"{what}: images must be a float array in [0, 1], got dtype {images.dtype}")
    if images.ndim not in (4, 5) or images.shape[-3:] != (height, width, channels) or \
            (images.ndim == 5 and images.shape[0] not in (1, batch)):
        got = (f"{images.shape[-2]}x{images.shape[-3]} frames with {images.shape[-1]} channels" if images.ndim in (4, 5)
               else f"images of shape {images.shape}")
        raise UsageError(f"{what}: {got}; this video needs {width}x{height} (the output size), {channels} channels")
    if np.issubdtype(images.dtype, np.floating) and (not np.isfinite(images).all() or images.min() < 0
                                                     or images.max() > 1):
        raise UsageError(f"{what}: images must be finite and in [0, 1]")


def active_steps(control: Control, num_steps: int) -> np.ndarray:
    """(num_steps,) bool: the denoising steps i the network runs at (diffusers' `controlnet_keep`: off
    when i/N < start or (i+1)/N > end)."""
    i = np.arange(num_steps)
    return ~((i / num_steps < control.control_guidance_start) | ((i + 1) / num_steps > control.control_guidance_end))


def check_controls(controls: Sequence[Control], *, batch: int, frames: int, width: int, height: int,
                   window: int, steps: int, cross_attention_dim: int, latent_channels: int, vae_scale: int) -> None:
    """Every error of `controls` for a video of this size, before anything is traced: kinds, scales
    and guidance windows (each must keep at least one of the `steps` denoising steps the loop runs),
    image shapes and value ranges, frame counts, key frames, the frames a SparseCtrl encoder's motion
    modules see at once (`window`: the video or the context window)."""
    for n, c in enumerate(controls):
        if not isinstance(c, Control) or not isinstance(c.controlnet, ControlNet):
            raise UsageError(f"controlnets[{n}]: must be a Control(ControlNet, images, ...), got {type(c).__name__}")
        net = c.controlnet
        what = f"controlnets[{n}] ({net.source})"
        cfg = net.config
        if cfg.cross_attention_dim != cross_attention_dim:
            raise UsageError(f"{what}: cross_attention_dim {cfg.cross_attention_dim} does not fit the base model's "
                             f"text encoder ({cross_attention_dim}): a ControlNet of another model family")
        factor = cfg.condition_downsample_factor()
        if not net.encodes_images and factor != vae_scale:
            raise UsageError(f"{what}: embeds control images {factor}x down to latent size, but the VAE's factor is "
                             f"{vae_scale}: a ControlNet of another model family")
        if cfg.global_pool_conditions:
            raise UsageError(f"{what}: a global-pooling ControlNet (shuffle; diffusers' guess mode) is not supported")
        for name in ("conditioning_scale", "control_guidance_start", "control_guidance_end"):
            value = getattr(c, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise UsageError(f"{what}: {name} must be a finite number, got {value!r}")
        if (problem := scale_problem(c.conditioning_scale, CONDITIONING)) is not None:
            raise UsageError(f"{what}: conditioning_scale {problem}")
        if not 0.0 <= c.control_guidance_start < c.control_guidance_end <= 1.0:
            raise UsageError(f"{what}: need 0 ≤ control_guidance_start < control_guidance_end ≤ 1, got "
                             f"{c.control_guidance_start} and {c.control_guidance_end}")
        if not active_steps(c, steps).any():
            raise UsageError(f"{what}: its guidance window {c.control_guidance_start}–{c.control_guidance_end} keeps "
                             f"none of the {steps} denoising steps (step i needs start ≤ i/{steps} and (i+1)/{steps} ≤ "
                             "end), so it would not be used: widen the window or take more steps")
        channels = 3 if net.encodes_images else cfg.conditioning_channels
        check_images(c.images, channels=channels, batch=batch, height=height, width=width, what=what)
        images = np.asarray(c.images)
        count = images.shape[-4]
        if net.kind == "controlnet":
            if c.keyframes is not None:
                raise UsageError(f"{what}: keyframes are for SparseCtrl encoders; a ControlNet takes one image "
                                 "per frame (or one for all)")
            frame_count_rule(count, frames, what)
            continue
        if c.keyframes is None:
            raise UsageError(f"{what}: a SparseCtrl encoder needs keyframes (the frame of each key image)")
        keys = list(c.keyframes)
        if len(keys) != count:
            raise UsageError(f"{what}: {len(keys)} keyframes for {count} key images (give one frame per image)")
        if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -frames <= k < frames for k in keys):
            raise UsageError(f"{what}: keyframes must be frame indices in [0, {frames}) (or from the end, -1 = "
                             f"the last), got {keys}")
        if len(set(keyframe_indices(keys, frames))) != len(keys):
            raise UsageError(f"{what}: keyframes {keys} name a frame twice")
        if window > net.max_frames:
            raise UsageError(f"{what}: its motion modules see at most {net.max_frames} frames at once, this call "
                             f"{window}; use context windows (context length ≤ {net.max_frames})")
        if net.encodes_images and latent_channels != cfg.conditioning_channels:
            raise UsageError(f"{what}: encodes the key images to {cfg.conditioning_channels}-channel latents, but "
                             f"the VAE makes {latent_channels}")


def keyframe_indices(keyframes: Sequence[int], frames: int) -> list[int]:
    """Key frames in [0, frames): negative ones count from the end (-1: the last), as the original's."""
    return [int(k) % frames for k in keyframes]


def keep_schedule(control: Control, num_steps: int) -> np.ndarray:
    """(num_steps,) float32: conditioning_scale at the steps the network runs at (`active_steps`), else 0."""
    return np.where(active_steps(control, num_steps), float(control.conditioning_scale), 0.0).astype(np.float32)


def condition(images, frames: int) -> np.ndarray:
    """Checked images (frames or 1, H, W, C) or (1 or B, frames or 1, H, W, C), float or uint8, as
    (1 or B, frames, H, W, C) float32 in [0, 1] (a single image repeated for every frame)."""
    images = np.asarray(images)
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    images = images[None] if images.ndim == 4 else images
    return np.broadcast_to(images, (images.shape[0], frames) + images.shape[2:]) if images.shape[1] == 1 else images


def sparse_condition(cond: jax.Array, keyframes: Sequence[int], frames: int) -> tuple[jax.Array, jax.Array]:
    """Key conditions (B, K, h, w, C) at `keyframes` -> (condition (B, F, h, w, C), zero elsewhere;
    mask (F,) float32, 1 on the key frames), as diffusers' `prepare_sparse_control_conditioning`."""
    idx = jnp.asarray(list(keyframes), jnp.int32)
    full = jnp.zeros((cond.shape[0], frames) + cond.shape[2:], cond.dtype).at[:, idx].set(cond)
    return full, jnp.zeros((frames,), jnp.float32).at[idx].set(1.0)


@dataclass(frozen=True)
class ControlArgs:
    """What the compiled step receives of one network per call (a pytree): params, condition
    (1 or B, F, H, W, C), mask (F,) (SparseCtrl; None otherwise), per-step scales (num_steps,)."""
    params: Any
    cond: jax.Array
    mask: jax.Array | None
    scales: jax.Array


jax.tree_util.register_dataclass(ControlArgs, data_fields=["params", "cond", "mask", "scales"], meta_fields=[])
# A step taking ControlArgs can be exported to disk like any other (sampling/program_cache.py).
jax.export.register_pytree_node_serialization(ControlArgs, serialized_name="animatediff_jax.ControlArgs",
                                              serialize_auxdata=lambda aux: b"", deserialize_auxdata=lambda data: ())


def residuals(networks: Sequence[ControlNetModel], args: Sequence[ControlArgs], x: jax.Array, t: jax.Array,
              emb: jax.Array, i: jax.Array, idx: jax.Array):
    """Summed (down residuals, mid residual) of every network at step i for the model input x
    (N, L, h, w, c) (N = B, or 2B with CFG: conditions repeat per half), timesteps t (N,), text emb,
    frames `idx` (L,) of the video; None when there are no networks."""
    down = mid = None
    n = x.shape[0]
    for net, a in zip(networks, args):
        cond = jnp.take(a.cond, idx, axis=1)
        cond = jnp.broadcast_to(cond, (n,) + cond.shape[1:]) if cond.shape[0] == 1 else \
            jnp.concatenate([cond] * (n // cond.shape[0]))
        extra = {} if a.mask is None else {
            "conditioning_mask": jnp.broadcast_to(jnp.take(a.mask, idx), (n, idx.shape[0]))}
        d, m = net.apply({"params": a.params}, x, t, emb, cond, conditioning_scale=a.scales[i], **extra)
        down = list(d) if down is None else [p + q for p, q in zip(down, d)]
        mid = m if mid is None else mid + m
    return (None, None) if down is None else (tuple(down), mid)
