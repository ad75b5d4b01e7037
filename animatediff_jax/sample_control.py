"""ControlNets and SparseCtrl for `python -m animatediff_jax.sample`: the flags (`--controlnet PATH[:SCALE]`
with `--control-video`, `--control-guidance-start/-end`; `--sparsectrl PATH[:SCALE]` with `--keyframes`
and `--keyframe-images`) and the prompt-config keys (`controlnets`, the original v3's `controlnet_*`) as
`ControlSpec`s; `check_controls` checks them before any model loads (the file exists and is a ControlNet
/ SparseCtrl encoder of the base's family, the control video has the output size and 1 or L frames, the
key frames lie in the video) and reads the images; `load_controls` reads the weights.

Pairing: the n-th `--control-video` belongs to the n-th `--controlnet`; `--control-guidance-start` /
`-end` are given once (for every ControlNet) or once per ControlNet. A control video is read with the
project's video reader as it is (no resizing: it must have the output size). Key images are read as the
original SparseCtrl reads them (`read_key_image`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from animatediff_jax.errors import InputError, UsageError, UserError
from animatediff_jax.yaml_file import read_yaml_mapping

# How errors name a spec's path, control video and key images: its flags, or (`ControlSpec.keys`) the keys
# of the prompt-config entry it came from; ENTRY_KEYS: where an entry gives a network of each kind.
FLAGS = {"controlnet": dict(path="--controlnet", video="--control-video"),
         "sparsectrl": dict(path="--sparsectrl", images="--keyframe-images")}
ENTRY_KEYS = {"controlnet": "a controlnets item's path", "sparsectrl": "controlnet_path"}


@dataclass
class ControlSpec:
    """One ControlNet (kind "controlnet": `video`, guidance window) or SparseCtrl encoder (kind
    "sparsectrl": key `images` at `keyframes`, `normalize`, the original's `config` yaml) of a job."""
    kind: str
    path: str
    conditioning_scale: float = 1.0
    video: str | None = None
    control_guidance_start: float = 0.0
    control_guidance_end: float = 1.0
    images: list[str] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)
    normalize: bool = False
    config: str | None = None
    keys: dict | None = None  # the prompt-config keys it came from, as FLAGS (None: the flags)

    def name(self, part: str = "path") -> str:
        """How errors name its `part` (path, video, images): the flag, or the prompt-config key the user wrote
        (messages about a config's entry start with the config and the entry: `sample.job_prefix`)."""
        return (self.keys or FLAGS[self.kind])[part]

    def other_kind(self, kind: str) -> str:
        """Where a network of `kind` goes instead: its flag, or an entry's key."""
        return FLAGS[kind]["path"] if self.keys is None else ENTRY_KEYS[kind]


def specs_from_flags(args) -> list[ControlSpec]:
    """The control flags as specs (counts and pairing checked; files not yet)."""
    nets, videos = args.controlnet, args.control_video
    if len(videos) != len(nets):
        raise UsageError(f"--control-video: {len(videos)} given for {len(nets)} --controlnet (give one conditioning "
                         "video per ControlNet, in the same order)")
    window = {}
    for name in ("control_guidance_start", "control_guidance_end"):
        values = getattr(args, name)
        if len(values) not in (0, 1, len(nets)) or (values and not nets):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag}: {len(values)} given for {len(nets)} --controlnet (give one for all or one "
                             "per ControlNet)")
        window[name] = values * len(nets) if len(values) == 1 else values or [None] * len(nets)
    specs = [ControlSpec("controlnet", path, scale, video=video,
                         **{k: v[n] for k, v in window.items() if v[n] is not None})
             for n, ((path, scale), video) in enumerate(zip(nets, videos))]
    if args.sparsectrl is None:
        for name in ("keyframes", "keyframe_images"):
            if getattr(args, name):
                raise UsageError(f"--{name.replace('_', '-')}: goes with --sparsectrl")
        return specs
    if not args.keyframes or not args.keyframe_images:
        raise UsageError("--sparsectrl: needs --keyframes and --keyframe-images (the frames and their images)")
    if len(args.keyframes) != len(args.keyframe_images):
        raise UsageError(f"--keyframe-images: {len(args.keyframe_images)} images for {len(args.keyframes)} "
                         "--keyframes (one image per key frame)")
    path, scale = args.sparsectrl
    return specs + [ControlSpec("sparsectrl", path, scale, images=list(args.keyframe_images),
                                keyframes=list(args.keyframes))]


def specs_from_entry(entry) -> list[ControlSpec]:
    """A prompt-config entry's `controlnets` and SparseCtrl keys (parsed by `prompt_config`) as specs."""
    specs = [ControlSpec("controlnet", c["path"], c["conditioning_scale"], video=c["video"],
                         control_guidance_start=c["control_guidance_start"],
                         control_guidance_end=c["control_guidance_end"],
                         keys=dict(path=f"controlnets[{i}].path", video=f"controlnets[{i}].video"))
             for i, c in enumerate(entry.controlnets)]
    s = entry.sparsectrl
    if s is not None:
        specs.append(ControlSpec("sparsectrl", s["path"], s["conditioning_scale"], images=list(s["images"]),
                                 keyframes=list(s["keyframes"]), normalize=s["normalize"], config=s["config"],
                                 keys=dict(path="controlnet_path", images="controlnet_images")))
    return specs


def entry_keys(specs: list[ControlSpec]) -> dict:
    """The prompt-config keys that say what `specs` say (a run's config.yaml; paths absolute, hub ids
    as given: `convert.sources.recorded`)."""
    from convert.sources import recorded  # noqa: PLC0415 - convert/ imports numpy, huggingface_hub
    out = {}
    nets = [s for s in specs if s.kind == "controlnet"]
    if nets:
        out["controlnets"] = [dict(path=recorded(s.path), video=os.path.abspath(s.video),
                                   conditioning_scale=s.conditioning_scale,
                                   control_guidance_start=s.control_guidance_start,
                                   control_guidance_end=s.control_guidance_end) for s in nets]
    for s in specs:
        if s.kind == "sparsectrl":
            out.update(controlnet_path=recorded(s.path),
                       controlnet_images=[os.path.abspath(i) for i in s.images], controlnet_image_indexs=list(s.keyframes), controlnet_conditioning_scale=s.conditioning_scale)
            if s.normalize:
                out["normalize_condition_images"] = True
            if s.config:
                out["controlnet_config"] = os.path.abspath(s.config)
    return out


def config_overrides(path: str | None) -> dict:
    """The diffusers config keys the original's SparseCtrl inference yaml (`controlnet_config`) states
    that a .ckpt cannot show: `set_noisy_sample_input_to_zero` and the motion modules' head count."""
    if path is None:
        return {}
    data = read_yaml_mapping(path, "SparseCtrl inference config (controlnet_config)")
    kwargs = data.get("controlnet_additional_kwargs") or {}
    out = {}
    if "set_noisy_sample_input_to_zero" in kwargs:
        out["set_noisy_sample_input_to_zero"] = bool(kwargs["set_noisy_sample_input_to_zero"])
    heads = (kwargs.get("motion_module_kwargs") or {}).get("num_attention_heads")
    if heads is not None:
        out["motion_num_attention_heads"] = heads
    return out


def read_key_image(path: str, height: int, width: int, normalize: bool = False) -> np.ndarray:
    """A key image (H, W, 3) float32 in [0, 1] as the original SparseCtrl reads it: RGB, centre-cropped
    to the W:H aspect (what its RandomResizedCrop(scale=(1, 1), ratio=W/H) falls back to), resized to
    H x W bilinearly (torchvision's resize of a PIL image), and with `normalize` (its scribble configs'
    `normalize_condition_images`) the channel mean min-max normalised, repeated to 3 channels."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - PIL is only needed here
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: cannot read as an image ({e})") from None
    w, h = image.size
    ratio = width / height
    cw, ch = (w, int(round(w / ratio))) if w / h < ratio else ((int(round(h * ratio)), h) if w / h > ratio else (w, h))
    top, left = (h - ch) // 2, (w - cw) // 2
    image = image.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BILINEAR)
    out = np.asarray(image, np.float32) / 255.0
    if normalize:
        grey = out.mean(axis=-1, keepdims=True)
        span = grey.max() - grey.min()
        if span == 0:
            raise InputError(f"{path}: a single-colour image cannot be normalised (normalize_condition_images)")
        out = np.repeat((grey - grey.min()) / span, 3, axis=-1)
    return out


def local_path(spec: ControlSpec, variant: str | None) -> str:
    """The local path of a spec's ControlNet / SparseCtrl encoder: a hub id's snapshot folder in the
    Hugging Face cache, its weights those of `variant` where it has them (`loading.locate`; LoadError
    naming the flag and the id where it cannot be had)."""
    from animatediff_jax import loading  # noqa: PLC0415 - imports JAX (sample's --help must not)
    from convert.sources import HUB_PATTERNS  # noqa: PLC0415
    return loading.locate(spec.path, spec.name(), HUB_PATTERNS["model"], variant)


def check_controls(specs: list[ControlSpec], *, base_unet, vae_config, width: int, height: int, frames: int,
                   window: int, steps: int, joint_motion: bool, batch: int, where: str = "",
                   variant: str | None = None) -> tuple[list, frozenset]:
    """Param-less `Control`s of `specs` and the weight variants (None: plain) of their diffusers folders'
    weights, every error raised now (before any model loads), one line naming the flag (or `where`, the
    config and entry, and the config key) and the file: files exist (hub ids: `local_path`) and are of
    the right kind and family, control videos have the output size and 1 or `frames` frames, key frames
    lie in the video, guidance windows keep some of the `steps` denoising steps the loop runs. `variant`: a diffusers folder's weight variant (e.g. fp16), where it has it."""
    from animatediff_jax.sampling import control as cn  # noqa: PLC0415
    controls, variants = [], frozenset()
    for s in specs:
        with named_by(where):
            control, chosen = checked_control(s, width=width, height=height, frames=frames, joint_motion=joint_motion,
                                              variant=variant)
        controls.append(control)
        variants |= chosen
    try:
        cn.check_controls(controls, batch=batch, frames=frames, width=width, height=height, window=window, steps=steps,
                          cross_attention_dim=base_unet.cross_attention_dim, latent_channels=vae_config.latent_channels,
                          vae_scale=vae_config.downsample_factor)
    except UsageError as e:  # "controlnets[n] (--flag path): problem" -> "--flag path: problem"
        message = str(e).split(" (", 1)[1].replace("): ", ": ", 1) if str(e).startswith("controlnets[") else str(e)
        raise UsageError(f"{where}{message}") from None
    return controls, variants


@contextlib.contextmanager
def named_by(where: str):
    """A UserError about a spec starts with `where` (a prompt config's `c.yaml: entry: `); a UsageError stays one."""
    try:
        yield
    except UserError as e:
        raise (UsageError if isinstance(e, UsageError) else InputError)(f"{where}{e}") from None


def checked_control(s: ControlSpec, *, width: int, height: int, frames: int, joint_motion: bool,
                    variant: str | None):
    """The param-less `Control` of one spec: its file (of the spec's kind), video (of the output size, 1 or
    `frames` frames) or key images read; and the weight variants (None: plain) of its diffusers folder's
    weights."""
    from animatediff_jax import loading  # noqa: PLC0415 - imports JAX (sample's --help must not)
    from animatediff_jax.sampling import control as cn  # noqa: PLC0415
    from animatediff_jax.video import read_video  # noqa: PLC0415 - PIL/PyAV
    from convert.controlnet import plan_controlnet  # noqa: PLC0415
    from convert.io import CheckpointError  # noqa: PLC0415
    from convert.motion import MotionModuleError  # noqa: PLC0415
    from convert.sources import as_given  # noqa: PLC0415
    path = local_path(s, variant)
    try:
        plan = plan_controlnet(path, variant=variant, overrides=config_overrides(s.config) or None)
    except (CheckpointError, MotionModuleError) as e:  # a SparseCtrl encoder's position encoding: the latter
        # the problem without the folder's name (weights_file names a hub snapshot as the id: as_given)
        problem = str(e).removeprefix(f"{as_given(path)}: ").removeprefix(f"{path}: ")
        raise InputError(f"{s.name()} {s.path}: {problem}") from None
    plan.close()
    if plan.kind != s.kind:
        what = "SparseCtrl encoder" if plan.kind == "sparsectrl" else "ControlNet"
        how = "pass it with" if s.keys is None else "give it as"
        raise UsageError(f"{s.name()} {s.path}: a {what}; {how} {s.other_kind(plan.kind)}")
    motion = plan.motion
    if motion is not None and joint_motion:
        motion = dataclasses.replace(motion, input_norm="joint")
    net = cn.ControlNet.build(plan.kind, plan.config, motion, {}, source=f"{s.name()} {s.path}")
    if s.kind == "controlnet":
        loading.require_exists(s.video, s.name("video"))
        try:
            images = read_video(s.video)
        except UserError as e:
            raise InputError(f"{s.name('video')} {e}") from None
        what = f"{s.name('video')} {s.video}"
        cn.check_images(images, channels=net.config.conditioning_channels, batch=1, height=height, width=width,
                        what=what)
        cn.frame_count_rule(len(images), frames, what)
    else:
        for image in s.images:
            loading.require_exists(image, s.name("images"))
        try:
            images = np.stack([read_key_image(i, height, width, s.normalize) for i in s.images])
        except UserError as e:
            raise InputError(f"{s.name('images')} {e}") from None
    return cn.Control(net, images, s.conditioning_scale, s.control_guidance_start, s.control_guidance_end,
                      list(s.keyframes) if s.kind == "sparsectrl" else None), plan.variants


def load_controls(specs: list[ControlSpec], controls: list, *, dtype: str, attention_impl: str,
                  variant: str | None = None, where: str = "") -> list:
    """`check_controls`' Controls with their networks' weights read (in the pipeline's dtype; the same
    `variant`) and refused when they hold NaN/Inf (`loading.refuse_nonfinite`, as the pipeline's weights
    are); errors name the spec as `check_controls` does."""
    from animatediff_jax import loading  # noqa: PLC0415 - imports JAX (sample's --help must not)
    from animatediff_jax.sampling import control as cn  # noqa: PLC0415
    from convert.controlnet import load_controlnet  # noqa: PLC0415
    out = []
    for s, c in zip(specs, controls):
        net = c.controlnet
        with named_by(where):
            params = load_controlnet(local_path(s, variant), variant=variant,
                                     overrides=config_overrides(s.config) or None).params
            loading.refuse_nonfinite(params, f"{s.name()} {s.path}")
        loaded = cn.ControlNet.build(net.kind, net.config, getattr(net.network, "motion", None), params, dtype=dtype,
                                     attention_impl=attention_impl, source=net.source)
        out.append(dataclasses.replace(c, controlnet=loaded))
    return out
