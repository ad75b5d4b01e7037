"""Weights for a sampling pipeline: base + DreamBooth + LoRAs + motion module (+ MotionLoRAs, v3 adapter).

Every path may be a PyTorch checkpoint (converted on the fly by `convert/`, the result cached as Flax
`.safetensors` under `params.cache_root()`/converted/<key>, key = hash of the file's size,
mtime and first/last MiB, and of the settings the conversion was given) or an already-converted
Flax file/folder. `base_configs` reads a base's configs from headers only (for the CLI's checks of
sizes against the models' geometry); a motion module is kept within the process, so the CLI's
validation and the pipeline read it once. All files are checked to
exist and to belong to SD1.x before anything is converted; the motion module must fit the base
UNet (same channels and layers), otherwise the error names both files.

Fusion order follows the original `load_weights`: motion module into the inflated UNet; DreamBooth
weights replace the base's UNet/VAE/text encoder; LoRA (kohya/diffusers) fused at its scale; the v3
domain adapter fused into the spatial attention; MotionLoRAs fused into the motion module.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from animatediff_jax.checkpoint import load_config, load_params, read_metadata, save_params
from animatediff_jax.errors import InputError, UserError
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.init import check_params
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.params import cache_root, flatten, insert_motion
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.sampling.samplers import ORIGINAL_SCHEDULER_KWARGS
from animatediff_jax.tokenizer import PromptTokenizer
from convert.base import convert_base, plan_base
from convert.lora import apply_lora_files, fuse_domain_adapter, fuse_motion_loras
from convert.motion import MotionModule, load_motion_module
from convert.unet3d_checkpoint import read_unet3d_checkpoint

NETWORKS = ("unet", "vae", "text_encoder")


class LoadError(InputError):
    """A set of weights that cannot be assembled into a pipeline (message names the file)."""


@dataclass
class LoadedWeights:
    unet_config: object
    motion_config: object | None
    vae_config: object
    text_config: object
    unet: dict
    vae: dict
    text_encoder: dict
    tokenizer_path: str | None
    scheduler_config: dict
    sources: dict


def require_exists(path: str | None, what: str) -> None:
    """LoadError `<what> <path>: not found` unless `path` is None or exists (what: a role or a flag)."""
    if path is not None and not os.path.exists(path):
        raise LoadError(f"{what} {path}: not found")


def cache_key(path: str) -> str:
    """Hash of a file's (or folder's files') size, mtime and first/last MiB."""
    h = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, path)}|{st.st_size}|{st.st_mtime_ns}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(2**20))
            if st.st_size > 2**20:
                fh.seek(max(st.st_size - 2**20, 2**20))
                h.update(fh.read(2**20))
    return h.hexdigest()[:24]


def settings_key(settings: dict) -> str:
    """A short hash of conversion settings (part of a cache key: other settings, another file)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def is_flax_file(path: str) -> bool:
    """A `.safetensors` written by animatediff_jax.checkpoint (metadata format=flax)."""
    if not (os.path.isfile(path) and path.endswith(".safetensors")):
        return False
    try:
        return read_metadata(path).get("format") == "flax"
    except ValueError:
        return False


def is_converted_base(path: str) -> bool:
    """A folder of converted Flax `unet`, `vae`, `text_encoder` `.safetensors` (what `load_sd_model` caches)."""
    return os.path.isdir(path) and all(is_flax_file(os.path.join(path, f"{n}.safetensors")) for n in NETWORKS)


def has_tokenizer(path: str) -> bool:
    """A folder holding a CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json), directly or in its
    `tokenizer/` (an SD1.x diffusers or converted folder; single files carry none)."""
    def holds(folder):
        return os.path.isfile(os.path.join(folder, "tokenizer.json")) or all(
            os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))
    return os.path.isdir(path) and (holds(path) or holds(os.path.join(path, "tokenizer")))


def base_configs(path: str) -> dict:
    """{"unet", "vae", "text_encoder"} -> config, and "scheduler" -> its scheduler config dict ({} if
    none), of an SD1.x base (diffusers folder, single file or converted folder), from config files,
    names and shapes only: no tensor data is read."""
    if is_converted_base(path):
        configs = {n: load_config(read_metadata(os.path.join(path, f"{n}.safetensors"))) for n in NETWORKS}
        return dict(configs, scheduler=_read_scheduler_config(path))
    plan = plan_base(path, check=False)
    try:
        return dict({n: plan.networks[n].config for n in NETWORKS}, scheduler=dict(plan.scheduler_config))
    finally:
        plan.close()


def _read_scheduler_config(folder: str) -> dict:
    path = os.path.join(folder, "scheduler_config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{path}: not a JSON scheduler config ({e})") from None


def _read_converted_base(folder: str) -> dict:
    out = {}
    for name in NETWORKS:
        params, meta = load_params(os.path.join(folder, f"{name}.safetensors"))
        out[name], out[f"{name}_config"] = params, load_config(meta)
    out["scheduler_config"] = _read_scheduler_config(folder)
    tok = os.path.join(folder, "tokenizer")
    out["tokenizer_path"] = tok if os.path.isdir(tok) else None
    return out


def read_base(path: str, **kwargs):
    """An SD1.x base model read and converted in memory, uncached (`convert.base.load_base`, whose
    keyword arguments pass through: dtype, progress, device, ...) -> `convert.base.BaseModel`.
    Training reads its base this way."""
    from convert.base import load_base  # local: torch/safetensors readers load only when a file is read
    return load_base(path, **kwargs)


def read_motion_module(path: str, **kwargs):
    """A motion module read and converted in memory, uncached (`convert.motion.load_motion_module`;
    keyword arguments pass through) -> `convert.motion.MotionModule`. Training starts from it this way."""
    from convert.motion import load_motion_module  # local: as in `read_base`
    return load_motion_module(path, **kwargs)


def load_sd_model(path: str, cache_dir: str, what: str, overrides: dict | None = None) -> dict:
    """An SD1.x model (diffusers folder, LDM single file, or converted folder) as Flax params + configs.
    `overrides`: config fields a single file cannot show (head counts, norm groups), per network."""
    require_exists(path, what)
    if is_converted_base(path):
        return _read_converted_base(path)
    key = cache_key(path) + (settings_key(overrides) if overrides else "")
    folder = os.path.join(cache_dir, "converted", "sd-" + key)
    if not is_converted_base(folder):
        print(f"converting {what} {path} -> {folder}")
        try:
            convert_base(path, folder, overrides=overrides)
        except UserError as e:  # re-raised with the role of the file
            raise LoadError(f"{what} {path}: {e}") from e
    return _read_converted_base(folder)


def _unseen_fields(sd_model: dict) -> dict:
    """The base's config fields that tensor shapes do not show: a DreamBooth file inherits them."""
    u, v, t = sd_model["unet_config"], sd_model["vae_config"], sd_model["text_encoder_config"]
    return {"unet": dict(norm_num_groups=u.norm_num_groups, attention_head_dim=u.attention_head_dim,
                         num_attention_heads=u.num_attention_heads),
            "vae": dict(norm_num_groups=v.norm_num_groups),
            "text_encoder": dict(num_attention_heads=t.num_attention_heads)}


def load_motion(path: str, cache_dir: str, *, version: str | None = None,
                max_seq_length: int | None = None) -> MotionModule:
    """A motion module (original file, MotionAdapter folder, or converted Flax file) -> `MotionModule`.

    version ("v1"/"v2"/"v3") and max_seq_length (position-encoding length) are what the user or an
    inference config says about the module (`convert.motion.load_motion_module`: they win over what
    the file shows, and a file without a position-encoding buffer needs them). A PyTorch file is
    converted once and cached under `cache_dir/converted/` (key: the file and these settings); within
    a process the result is kept, so validation and the pipeline read each file once."""
    require_exists(path, "motion module")
    settings = dict(version=version, max_seq_length=max_seq_length)
    return _load_motion(os.path.abspath(path), cache_key(path), tuple(settings.items()), cache_dir)


@functools.lru_cache(maxsize=8)  # leaves are memory-mapped views of the converted file: cheap to keep
def _load_motion(path: str, key: str, settings: tuple, cache_dir: str) -> MotionModule:
    settings = dict(settings)
    given = {k: v for k, v in settings.items() if v is not None}
    cached = path if is_flax_file(path) else os.path.join(
        cache_dir, "converted", f"motion-{key}" + (f"-{settings_key(given)}" if given else "") + ".safetensors")
    if not is_flax_file(cached):
        mm = load_motion_module(path, **settings)
        save_params(cached, mm.params, config=mm.config, source=f"motion:{path}",
                    metadata={"motion": json.dumps({"block_out_channels": list(mm.block_out_channels),
                                                    "layers_per_block": mm.layers_per_block,
                                                    "version": mm.version})})
    params, meta = load_params(cached)  # zero-copy
    if "motion" not in meta:
        raise LoadError(f"{path}: a Flax params file but not a motion module (no motion metadata)")
    info = json.loads(meta["motion"])
    mm = MotionModule(params, load_config(meta), tuple(info["block_out_channels"]), int(info["layers_per_block"]),
                      info["version"])
    if cached == path and given:  # a converted file states its version; a different one is a mistake
        said = dict(version=mm.version, max_seq_length=mm.config.max_seq_length)
        clash = {k: v for k, v in given.items() if said[k] != v}
        if clash:
            raise LoadError(f"{path}: a converted motion module with {said}; asked for {clash}")
    return mm


def check_motion_fits(unet_config, mm, motion_path: str, base_path: str) -> None:
    """The motion module must have been trained for this UNet's layout (same model family)."""
    if tuple(mm.block_out_channels) != tuple(unet_config.block_out_channels) \
            or mm.layers_per_block != unet_config.layers_per_block:
        raise LoadError(
            f"motion module {motion_path} (channels {list(mm.block_out_channels)}, {mm.layers_per_block} "
            f"layers per block) does not fit the base UNet of {base_path} (channels "
            f"{list(unet_config.block_out_channels)}, {unet_config.layers_per_block} layers per block): "
            "a motion module of another model family")


def load_weights(base: str, *, dreambooth: str | None = None, loras: Sequence[tuple[str, float]] = (),
                 motion_module: str | None = None, motion_loras: Sequence[tuple[str, float]] = (),
                 domain_adapter: tuple[str, float] | None = None, motion_input_norm: str = "frame",
                 motion_version: str | None = None, motion_max_seq_length: int | None = None,
                 lora_alpha_rule: str = "kohya", unet_checkpoint: str | None = None, cache_dir: str) -> LoadedWeights:
    """Assemble all weights (see module docstring). Files are checked to exist before any conversion.
    motion_version / motion_max_seq_length: see `load_motion`. `lora_alpha_rule`: how `loras` are
    scaled, "kohya" (flags) or "original" (prompt configs), see `convert.lora.fuse`. `unet_checkpoint`: a
    first-release `.ckpt` path, the whole UNet3D replacing the UNet (`convert/unet3d_checkpoint.py`)."""

    require_exists(base, "base model")
    require_exists(dreambooth, "DreamBooth checkpoint")
    require_exists(motion_module, "motion module")
    for p, _ in loras:
        require_exists(p, "LoRA")
    for p, _ in motion_loras:
        require_exists(p, "MotionLoRA")
    if domain_adapter is not None:
        require_exists(domain_adapter[0], "domain adapter")
    if motion_loras and motion_module is None:
        raise LoadError("MotionLoRAs need a motion module")
    if motion_input_norm not in ("frame", "joint"):
        raise LoadError(f"motion_input_norm must be 'frame' or 'joint', got {motion_input_norm!r}")

    sd_model = load_sd_model(base, cache_dir, "base model")
    mm = load_motion(motion_module, cache_dir, version=motion_version,
                     max_seq_length=motion_max_seq_length) if motion_module else None
    if mm is not None:
        check_motion_fits(sd_model["unet_config"], mm, motion_module, base)
    if dreambooth:
        db = load_sd_model(dreambooth, cache_dir, "DreamBooth checkpoint", overrides=_unseen_fields(sd_model))
        shapes = lambda tree: {p: np.shape(v) for p, v in flatten(tree).items()}  # noqa: E731
        for name in NETWORKS:
            if shapes(db[name]) != shapes(sd_model[name]):
                raise LoadError(f"DreamBooth checkpoint {dreambooth}: its {name} layout differs from the base "
                                f"model {base} (not the same SD1.x family)")
            sd_model[name] = db[name]
    nets = {"unet": sd_model["unet"], "text_encoder": sd_model["text_encoder"]}
    if loras:
        nets = apply_lora_files(nets, list(loras), alpha_rule=lora_alpha_rule)
    unet2d = nets["unet"]
    if domain_adapter is not None:
        unet2d = fuse_domain_adapter(unet2d, *domain_adapter)
    motion_config = None
    unet = unet2d
    if mm is not None:
        motion = fuse_motion_loras(mm.params, list(motion_loras)) if motion_loras else mm.params
        unet = insert_motion(unet2d, motion, strict=False)
        motion_config = replace(mm.config, input_norm=motion_input_norm)
    if unet_checkpoint is not None:  # loaded after the motion module, replacing the whole UNet (the original)
        if mm is None:
            raise LoadError(f"{unet_checkpoint}: a first-release UNet3D .ckpt needs the entry's motion_module "
                            "(the layout of the motion modules it holds)")
        unet = read_unet3d_checkpoint(unet_checkpoint, sd_model["unet"], mm)
    return LoadedWeights(sd_model["unet_config"], motion_config, sd_model["vae_config"],
                         sd_model["text_encoder_config"], unet, sd_model["vae"], nets["text_encoder"],
                         sd_model["tokenizer_path"], sd_model["scheduler_config"],
                         dict(base=base, dreambooth=dreambooth, loras=list(loras), motion_module=motion_module,
                              motion_loras=list(motion_loras), domain_adapter=domain_adapter,
                              motion_version=mm.version if mm else None))


def load_pipeline(base: str, *, dreambooth: str | None = None, loras: Sequence[tuple[str, float]] = (),
                  motion_module: str | None = None, motion_loras: Sequence[tuple[str, float]] = (),
                  domain_adapter: tuple[str, float] | None = None, scheduler: str | None = None,
                  scheduler_config: str | Mapping[str, Any] = "original", dtype: str | None = None,
                  attention_impl: str = "auto", motion_input_norm: str = "frame", clip_skip: int = 0,
                  tokenizer: str | None = None, cache_dir: str | None = None, check: bool = True,
                  motion_version: str | None = None, motion_max_seq_length: int | None = None,
                  lora_alpha_rule: str = "kohya", unet_checkpoint: str | None = None,
                  **kwargs) -> AnimateDiffPipeline:
    """An `AnimateDiffPipeline` from files: every weight loaded once (PyTorch or converted Flax files;
    see the module docstring), checked against its network, then `AnimateDiffPipeline.build`.

    scheduler: "ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm" (None: DDIM, or the class of
    a given scheduler config). scheduler_config: "original" (AnimateDiff's inference config:
    linear 0.00085 -> 0.012, DDIM leading spacing, steps_offset 1), "base" (the base model's own
    `scheduler/` config), a diffusers config dict, or the path of a scheduler_config.json.
    motion_input_norm: "frame" (original AnimateDiff, the released checkpoints) or "joint"
    (diffusers' AnimateDiffTransformer3D). tokenizer: a CLIP tokenizer folder, needed when the base
    is a single file (which carries none). motion_version ("v1"/"v2"/"v3"), motion_max_seq_length:
    what the user knows of the motion module (`load_motion`), needed for a file without a
    position-encoding buffer. lora_alpha_rule: "kohya" (W += scale · alpha/rank · up @ down)
    or "original" (W += scale · up @ down, how the original's prompt configs apply `lora_alpha`).
    """
    w = load_weights(base, dreambooth=dreambooth, loras=loras, motion_module=motion_module,
                     motion_loras=motion_loras, domain_adapter=domain_adapter,
                     motion_input_norm=motion_input_norm, motion_version=motion_version,
                     motion_max_seq_length=motion_max_seq_length, lora_alpha_rule=lora_alpha_rule,
                     unet_checkpoint=unet_checkpoint, cache_dir=cache_dir or cache_root())
    if check:
        c = w.unet_config
        check_params(UNet3DConditionModel(c, w.motion_config), w.unet, f"UNet ({base}, {motion_module})")
        check_params(AutoencoderKL(w.vae_config), w.vae, f"VAE ({base})")
        check_params(CLIPTextModel(w.text_config), w.text_encoder, f"text encoder ({base})")
    tok_path = tokenizer or w.tokenizer_path
    if tok_path is None:
        raise LoadError(f"{base} carries no tokenizer (a single file); pass tokenizer=<CLIP tokenizer folder>")
    if isinstance(scheduler_config, str) and scheduler_config in ("original", "base"):
        sched = dict(ORIGINAL_SCHEDULER_KWARGS) if scheduler_config == "original" else w.scheduler_config
    elif isinstance(scheduler_config, str):
        if not os.path.isfile(scheduler_config):
            raise LoadError(f"scheduler config {scheduler_config!r} not found")
        with open(scheduler_config) as f:
            sched = json.load(f)
    else:
        sched = dict(scheduler_config)
    if scheduler is None and "_class_name" not in sched:
        scheduler = "ddim"
    pipe = AnimateDiffPipeline.build(w.unet_config, w.motion_config, w.vae_config, w.text_config, w.unet,
                                     w.vae, w.text_encoder, PromptTokenizer.from_pretrained(tok_path),
                                     dtype=dtype,
                                     attention_impl=attention_impl, scheduler=scheduler,
                                     scheduler_config=sched, clip_skip=clip_skip, **kwargs)
    pipe.description.update(w.sources, motion_input_norm=motion_input_norm)
    pipe.make_sampler(1)  # validates the scheduler settings now, before any compilation
    return pipe
