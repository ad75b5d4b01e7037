"""Weights for a sampling pipeline: base + DreamBooth + LoRAs + motion module (+ MotionLoRAs, v3 adapter).

One user action, one way through:

    files = ModelFiles(base, dreambooth=..., loras=..., motion_module=...)  # what the user names
    checked = check_files(files, cache_dir)   # every check, before any work: files exist, SD1.x,
                                              # DreamBooth of the base's family, the motion module
                                              # read (once) and fitting the base UNet, each
                                              # LoRA read (once) and fitting its layers
    pipe = pipeline_from_checked(checked)     # read/convert (once), fuse, check params, build
    pipe = load_pipeline(base, ...)           # the two steps above, for Python users

Every path may be a PyTorch checkpoint (converted on the fly by `convert/`, the result cached as Flax
`.safetensors` under `params.cache_root()`/converted/<key>, key = hash of the file's size,
mtime and first/last MiB, and of the settings the conversion was given), an already-converted
Flax file/folder, or a hub id (`owner/name`) of a diffusers SD folder (base, DreamBooth), a
MotionAdapter, a LoRA repo (PEFT adapter, diffusers LoRA or MotionLoRA), a ControlNet / SparseCtrl
(`sample_control`): a snapshot in the Hugging Face cache, downloaded when the hub is reachable
(`locate`). One weight `variant` (e.g. fp16) applies to every diffusers folder. A base that is not
converted yet is planned once by `check_files` (configs from headers, shapes checked against the
networks) and that plan is what the conversion streams; a motion module is kept within the process.

Fusion order follows the original `load_weights`: motion module into the inflated UNet; DreamBooth
weights replace the base's UNet/VAE/text encoder; LoRA (kohya/diffusers) fused at its scale; the v3
domain adapter fused into the spatial attention; MotionLoRAs fused into the motion module.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from animatediff_jax.checkpoint import (NETWORKS, is_flax_file, load_config, load_params, network_config, read_metadata,
                                        save_params)
from animatediff_jax.errors import InputError, UsageError, UserError
from animatediff_jax.text_files import read_json_object
from animatediff_jax.models.configs import SHAPE_FIELDS
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.nonfinite import describe as describe_nonfinite, find_nonfinite
from animatediff_jax.params import cache_root, check_shapes, insert_motion, unflatten
from animatediff_jax.safetensors_file import SafetensorsFile
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.sampling.samplers import ORIGINAL_SCHEDULER_KWARGS
from animatediff_jax.tokenizer import PromptTokenizer, check_tokenizer, tokenizer_folder
from convert.base import BaseModel, BasePlan, convert_base, load_base, plan_base
from convert.io import checkpoint_format
from convert.lora import (ALPHA_RULES, LoraWeights, fuse, parse_scale, read_lora, read_motion_lora,
                         read_spatial_lora)
from convert.motion import MotionModule, assumed_message, load_motion_module
from animatediff_jax.param_shapes import flax_param_shapes, module_param_shapes
from animatediff_jax.scale_limits import LORA, scale_problem
from animatediff_jax.hub_ids import is_hub_id
from convert.sources import HUB_PATTERNS, SD_COMPONENTS, resolve_source, weights_file, weights_variant
from convert.sources import VariantError  # noqa: F401 - what a reader's caller catches (training: trainer.one_variant)
from convert.unet3d_checkpoint import check_kind, read_unet3d_checkpoint

# How errors name each file: by its role (Python API) or by the CLI flag that gave it (`sample`).
ROLES = dict(base="base model", dreambooth="DreamBooth checkpoint", motion_module="motion module", loras="LoRA",
             motion_loras="MotionLoRA", domain_adapter="domain adapter", tokenizer="tokenizer",
             motion_heads="motion_heads", motion_norm_groups="motion_norm_groups")
FLAGS = dict(base="--base", dreambooth="--dreambooth", motion_module="--motion-module", loras="--lora",
             motion_loras="--motion-lora", domain_adapter="--domain-adapter", tokenizer="--tokenizer",
             motion_heads="--motion-heads", motion_norm_groups="--motion-norm-groups")


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


MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".txt", ".yaml")


def cache_key(path: str) -> str:
    """Hash of a file's size, mtime and first/last MiB; of a folder, of its model files' (the
    `MODEL_FILE_SUFFIXES` at its top level and one level down, e.g. a diffusers folder's
    unet/config.json and weights; hidden entries, other files and broken links left out), so a folder
    of other things is not read before the conversion says what it lacks. Never raises for a file it
    cannot read (the conversion that follows names it)."""
    h = hashlib.sha256()
    for f in [path] if os.path.isfile(path) else _model_files(path):
        try:
            st = os.stat(f)
            h.update(f"{os.path.relpath(f, path)}|{st.st_size}|{st.st_mtime_ns}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(2**20))
                if st.st_size > 2**20:
                    fh.seek(max(st.st_size - 2**20, 2**20))
                    h.update(fh.read(2**20))
        except OSError as e:
            h.update(f"{os.path.relpath(f, path)}|unreadable {e.errno}".encode())
    return h.hexdigest()[:24]


def _model_files(folder: str) -> list[str]:
    """`folder`'s files ending in a `MODEL_FILE_SUFFIXES` suffix, at its top level and in its
    subfolders (one level), sorted; none for what cannot be listed."""
    def listed(d: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(d) if not n.startswith("."))
        except OSError:
            return []
    top = [os.path.join(folder, n) for n in listed(folder)]
    below = [os.path.join(d, n) for d in top if os.path.isdir(d) for n in listed(d)]
    return [f for f in top + below if f.endswith(MODEL_FILE_SUFFIXES) and os.path.isfile(f)]


def settings_key(settings: dict) -> str:
    """A short hash of conversion settings (part of a cache key: other settings, another file)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def is_converted_base(path: str) -> bool:
    """A folder of converted Flax `unet`, `vae`, `text_encoder` `.safetensors` (what `read_sd_model` caches)."""
    return os.path.isdir(path) and all(is_flax_file(os.path.join(path, f"{n}.safetensors")) for n in NETWORKS)


def _read_scheduler_config(folder: str) -> dict:
    path = os.path.join(folder, "scheduler_config.json")
    if not os.path.exists(path):
        return {}
    try:
        return read_json_object(path)
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: not a readable scheduler config ({getattr(e, 'strerror', None) or e})") from None


def _read_converted_base(folder: str, dtype: str | None = None) -> dict:
    out = {}
    for name in NETWORKS:
        path = os.path.join(folder, f"{name}.safetensors")
        params, meta = load_params(path, dtype=dtype)
        out[name], out[f"{name}_config"] = params, network_config(meta, path, name)
    out["scheduler_config"] = _read_scheduler_config(folder)
    return out


def read_base(path: str, *, dtype: str | None = None, progress: bool = True, variant: str | None = None) -> BaseModel:
    """An SD1.x base model read in memory, uncached -> `convert.base.BaseModel` (numpy leaves cast to
    `dtype`, e.g. "float32"; None keeps the files'). A converted folder (`python -m convert base`, the
    shipped miniature's `assets/miniature/base`) is read as stored; a diffusers folder, single file or
    hub id in the local cache is converted by `convert.base.load_base` (`progress`: its progress bar;
    `variant`: a diffusers folder's weight variant, e.g. "fp16"). Training and `data.precompute` read
    their base this way. InputError naming the path otherwise."""
    if not is_converted_base(path):
        return load_base(path, dtype=dtype, progress=progress, variant=variant)
    read = _read_converted_base(path, dtype)
    return BaseModel(read["unet"], read["vae"], read["text_encoder"], read["unet_config"], read["vae_config"],
                     read["text_encoder_config"], tokenizer_folder(path), read["scheduler_config"], "flax")


def read_motion_module(path: str, **kwargs):
    """A motion module read and converted in memory, uncached (`convert.motion.load_motion_module`;
    keyword arguments pass through) -> `convert.motion.MotionModule`. Training starts from it this way."""
    return load_motion_module(path, **kwargs)


def load_motion(path: str, cache_dir: str, *, version: str | None = None, max_seq_length: int | None = None,
                heads: int | None = None, norm_num_groups: int | None = None,
                variant: str | None = None) -> MotionModule:
    """A motion module (original file, MotionAdapter folder, or converted Flax file; a local path,
    hub ids are `locate`d first) -> `MotionModule`.

    version ("v1"/"v2"/"v3") and max_seq_length (position-encoding length) are what the user or an
    inference config says about the module, heads and norm_num_groups what the user says
    (`convert.motion.load_motion_module`: they win over what the file shows; a file without a
    position-encoding buffer needs the version, an original-format file of other than 8 heads and
    32 groups, which it cannot store, needs those); `variant` picks a
    MotionAdapter folder's weight variant. A PyTorch file is converted once and cached under
    `cache_dir/converted/` (key: the file and these settings); within a process the result is kept,
    so validation and the pipeline read each file once."""
    require_exists(path, "motion module")
    settings = dict(version=version, max_seq_length=max_seq_length, heads=heads, norm_num_groups=norm_num_groups,
                    **({"variant": variant} if variant and os.path.isdir(path) else {}))
    return _load_motion(path, os.path.abspath(path), cache_key(path), tuple(settings.items()), cache_dir)


@functools.lru_cache(maxsize=8)  # leaves are memory-mapped views of the converted file: cheap to keep
def _load_motion(path: str, absolute: str, key: str, settings: tuple, cache_dir: str) -> MotionModule:
    """`path` as the user gave it (what messages show); `absolute` keys the process cache with `key`."""
    settings = dict(settings)
    given = {k: v for k, v in settings.items() if v is not None}
    cached = path if is_flax_file(path) else os.path.join(
        cache_dir, "converted", f"motion-{key}" + (f"-{settings_key(given)}" if given else "") + ".safetensors")
    if not is_flax_file(cached):
        mm = load_motion_module(path, **settings)
        save_params(cached, mm.params, config=mm.config, source=f"motion:{absolute}",
                    metadata={"motion": json.dumps({"block_out_channels": list(mm.block_out_channels),
                                                    "layers_per_block": mm.layers_per_block,
                                                    "version": mm.version, "assumed": list(mm.assumed)})})
    params, meta = load_params(cached)  # zero-copy
    if "motion" not in meta:
        raise LoadError(f"{path}: a Flax params file but not a motion module (no motion metadata)")
    info = json.loads(meta["motion"])
    mm = MotionModule(params, load_config(meta), tuple(info["block_out_channels"]), int(info["layers_per_block"]),
                      info["version"], assumed=tuple(info.get("assumed", ())))  # what the source did not state
    heads, groups = mm.config.num_attention_heads, mm.config.norm_num_groups
    if any(c % heads or c % groups for c in mm.block_out_channels):  # a damaged or hand-edited config
        raise LoadError(f"{path}: its config (num_attention_heads={heads}, norm_num_groups={groups}) does not "
                        f"divide its channels {list(mm.block_out_channels)}")
    if cached == path and given:  # a converted file states its version; a different one is a mistake
        said = dict(version=mm.version, max_seq_length=mm.config.max_seq_length, heads=heads,
                    norm_num_groups=groups)
        clash = {k: v for k, v in given.items() if said[k] != v}
        if clash:
            raise LoadError(f"{path}: a converted motion module with {said}; asked for {clash}")
    return mm


def check_motion_fits(unet_config, mm: MotionModule, motion_path: str, base_path: str,
                      names: Mapping[str, str] = ROLES) -> None:
    """The motion module must have been trained for this UNet's layout (same model family)."""
    if tuple(mm.block_out_channels) != tuple(unet_config.block_out_channels) \
            or mm.layers_per_block != unet_config.layers_per_block:
        raise LoadError(
            f"{names['motion_module']} {motion_path} (channels {list(mm.block_out_channels)}, {mm.layers_per_block} "
            f"layers per block) does not fit the base UNet of {names['base']} {base_path} (channels "
            f"{list(unet_config.block_out_channels)}, {unet_config.layers_per_block} layers per block): "
            "a motion module of another model family")


# ----------------------------------------------------------------------------- check, then load

@dataclass(frozen=True)
class ModelFiles:
    """The weight files a user names for one pipeline. loras / motion_loras: (path, scale) pairs;
    domain_adapter: (path, scale); motion_version ("v1"/"v2"/"v3"), motion_max_seq_length, motion_heads
    and motion_norm_groups: what the user knows of the motion module (`load_motion`); tokenizer: a CLIP tokenizer folder, needed
    when the base is a single file; lora_alpha_rule: "kohya" (flags) or "original" (prompt configs),
    see `convert.lora.fuse`; unet_checkpoint: a first-release `.ckpt` `path`, the whole UNet3D
    (diffusers names) replacing the UNet after the motion module (`convert/unet3d_checkpoint.py`);
    variant: the weight variant (e.g. fp16) of every diffusers folder among them (base, DreamBooth,
    MotionAdapter) that has it (`convert.sources.weights_file`). Model paths may be hub ids (`locate`)."""
    base: str
    dreambooth: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    motion_module: str | None = None
    motion_loras: tuple[tuple[str, float], ...] = ()
    domain_adapter: tuple[str, float] | None = None
    motion_version: str | None = None
    motion_max_seq_length: int | None = None
    motion_heads: int | None = None
    motion_norm_groups: int | None = None
    tokenizer: str | None = None
    lora_alpha_rule: str = "kohya"
    unet_checkpoint: str | None = None
    variant: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "loras", tuple(tuple(x) for x in self.loras))
        object.__setattr__(self, "motion_loras", tuple(tuple(x) for x in self.motion_loras))
        if self.domain_adapter is not None:
            object.__setattr__(self, "domain_adapter", tuple(self.domain_adapter))


@dataclass(frozen=True)
class SDSource:
    """An SD1.x model (base or DreamBooth) as found: `folder` is the converted Flax folder (the path
    itself when already converted), `configs` its {"unet", "vae", "text_encoder", "scheduler"}, and
    `plan` the open conversion plan while `folder` is not written yet (None once it is); `variants`: the
    weight variants (None: plain) of the diffusers folder's weights the conversion reads or read."""
    path: str
    folder: str
    configs: dict
    plan: BasePlan | None
    variants: frozenset = frozenset()


@dataclass(frozen=True)
class ReadLora:
    """A LoRA file read and checked against its networks' shapes: {component: {Flax kernel path:
    LoraWeights}} (`convert.lora.read_lora`), to be fused at `scale`."""
    path: str
    scale: float
    updates: Mapping[str, Mapping[tuple[str, ...], LoraWeights]]


@dataclass(frozen=True)
class CheckedFiles:
    """`ModelFiles` that passed `check_files`, with what the checks read (reused by the load), and
    `variants`: the weight variants (None: plain) of the diffusers folders' weights read for them."""
    files: ModelFiles
    base: SDSource
    dreambooth: SDSource | None
    motion: MotionModule | None
    tokenizer: str
    loras: tuple[ReadLora, ...] = ()
    motion_loras: tuple[ReadLora, ...] = ()
    domain_adapter: ReadLora | None = None
    variants: frozenset = frozenset()


def check_files(files: ModelFiles, cache_dir: str, names: Mapping[str, str] = ROLES) -> CheckedFiles:
    """Every check of `files` that can fail, before any conversion or compilation: each file exists
    (a hub id is found or downloaded first: `locate`), is what its role needs, the DreamBooth
    is of the base's family, the motion module fits the base UNet, a tokenizer is there, every LoRA
    (MotionLoRA, domain adapter) targets layers of the shapes the networks have. Errors
    (`UserError`s) name the file by `names` (roles, or the CLI's flags: `FLAGS`)."""
    if files.motion_loras and files.motion_module is None:
        raise UsageError(f"{names['motion_loras']}: needs a motion module ({names['motion_module']})")
    if files.unet_checkpoint is not None:
        require_exists(files.unet_checkpoint, "path")
        if files.motion_module is None:
            raise UsageError(f"path {files.unet_checkpoint}: a first-release UNet3D .ckpt needs the entry's "
                             "motion_module (the layout of the motion modules it holds)")
        check_kind(files.unet_checkpoint)
    if files.lora_alpha_rule not in ALPHA_RULES:
        raise UsageError(f"lora_alpha_rule: one of {ALPHA_RULES}, got {files.lora_alpha_rule!r}")
    local = located(files, names)
    base_path = local.base
    check_file_format(base_path, names["base"])  # what the file is, before what it lacks (a tokenizer)
    given = files.tokenizer is not None
    tokenizer = check_tokenizer(local.tokenizer if given else base_path, names["tokenizer" if given else "base"])
    if tokenizer is None and given:
        raise InputError(f"{names['tokenizer']} {files.tokenizer}: no CLIP tokenizer there (needs vocab.json + "
                         "merges.txt, or tokenizer.json)")
    if tokenizer is None:
        single = os.path.isfile(base_path)  # a single file never carries one: the flag is missing (usage)
        error = UsageError if single else InputError  # a folder that should: the folder is incomplete
        raise error(f"{names['tokenizer']}: {files.base} carries no CLIP tokenizer "
                    f"({'a single file' if single else 'a folder without tokenizer/'}); pass "
                    f"{names['tokenizer']} <tokenizer folder or hub id>, e.g. the `tokenizer/` of an SD1.5 diffusers "
                    "folder, or that SD1.5 repo's id")
    base = sd_source(base_path, cache_dir, names["base"], variant=files.variant)
    dreambooth = None
    if files.dreambooth is not None:
        dreambooth = sd_source(local.dreambooth, cache_dir, names["dreambooth"], overrides=_unseen_fields(base.configs),
                               variant=files.variant)
        _check_same_family(dreambooth, base, names)
    mm, variants = None, base.variants | (dreambooth.variants if dreambooth else frozenset())
    if files.motion_module is not None:
        try:
            mm = load_motion(local.motion_module, cache_dir, version=files.motion_version,
                             max_seq_length=files.motion_max_seq_length, heads=files.motion_heads,
                             norm_num_groups=files.motion_norm_groups, variant=files.variant)
            if files.variant and os.path.isdir(local.motion_module):  # the choice its conversion makes or made
                variants |= {weights_variant(weights_file(local.motion_module, variant=files.variant))}
        except UserError as e:
            raise _named(e, names["motion_module"]) from e
        said = assumed_message(names["motion_module"] + " " + files.motion_module, mm,
                               {"num_attention_heads": names["motion_heads"],
                                "norm_num_groups": names["motion_norm_groups"]})
        if said:
            warnings.warn(said)
        check_motion_fits(base.configs["unet"], mm, files.motion_module, files.base, names)
    return CheckedFiles(files, base, dreambooth, mm, tokenizer, variants=variants,
                        **_read_loras(files, local, base.configs, mm, names))


def check_file_format(path: str, name: str) -> None:
    """LoadError `<name> <problem>` when `path` is a file of no checkpoint format read here
    (`convert.io.checkpoint_format`: safetensors, a PyTorch pickle or zip, a shard index; an empty,
    unknown or corrupt file is refused). Folders pass: what they hold is checked when they are read."""
    if os.path.isfile(path):
        try:
            checkpoint_format(path)
        except UserError as e:
            raise LoadError(f"{name} {e}") from e


def located(files: ModelFiles, names: Mapping[str, str] = ROLES) -> ModelFiles:
    """`files` with each model input a local path (`locate`: a hub id found in, or downloaded into,
    the Hugging Face cache; LoadError naming the role or flag and the path for one not there)."""
    def one(path: str | None, role: str, patterns: list[str], variant: str | None = None) -> str | None:
        return None if path is None else locate(path, names[role], patterns, variant)

    def pairs(role: str) -> tuple:
        return tuple((one(p, role, HUB_PATTERNS["lora"]), s) for p, s in getattr(files, role))
    adapter = files.domain_adapter
    return replace(files, base=one(files.base, "base", HUB_PATTERNS["sd"], files.variant),
                   tokenizer=one(files.tokenizer, "tokenizer", HUB_PATTERNS["tokenizer"]),
                   dreambooth=one(files.dreambooth, "dreambooth", HUB_PATTERNS["sd"], files.variant),
                   motion_module=one(files.motion_module, "motion_module", HUB_PATTERNS["model"], files.variant),
                   loras=pairs("loras"), motion_loras=pairs("motion_loras"),
                   domain_adapter=None if adapter is None else (one(adapter[0], "domain_adapter", HUB_PATTERNS["lora"]),
                                                                adapter[1]))


def parameter_count(checked: CheckedFiles) -> int:
    """Parameters the pipeline of `checked` holds (base UNet, VAE, text encoder and the motion module),
    counted from the converted files' headers or the conversion plan: nothing read or traced."""
    base = checked.base
    if base.plan is not None:
        shapes = [leaf.shape for n in NETWORKS for leaf in base.plan.networks[n].leaves.values()]
    else:
        shapes = []
        for n in NETWORKS:
            with SafetensorsFile(os.path.join(base.folder, f"{n}.safetensors")) as f:
                shapes += [entry.shape for entry in f.entries.values()]
    motion = [] if checked.motion is None else [np.shape(a) for a in jax.tree.leaves(checked.motion.params)]
    return sum(math.prod(shape) for shape in shapes + motion)


def _named(e: UserError, name: str) -> UserError:
    """`e` re-raised naming the role (or flag) of its file: a UsageError stays one (exit code 2)."""
    return (UsageError if isinstance(e, UsageError) else LoadError)(f"{name} {e}")


def _shapes(network: str, config) -> dict:
    """Our `network`'s params as `jax.ShapeDtypeStruct` leaves (traced shapes; no weights)."""
    return unflatten({p: jax.ShapeDtypeStruct(shape, "float32")
                      for p, shape in flax_param_shapes(network, config).items()})


def _read_loras(files: ModelFiles, local: ModelFiles, configs: Mapping, mm: MotionModule | None,
                names: Mapping[str, str]) -> dict:
    """The LoRAs, MotionLoRAs and domain adapter of `files` (read from their `local` paths), each read
    once and checked against the shapes of the layers it targets (the DreamBooth has the base's
    shapes: `_check_same_family`)."""
    if not (files.loras or files.motion_loras or files.domain_adapter):
        return {}
    unet = _shapes("unet", configs["unet"]) if files.loras or files.domain_adapter else None

    def read(role: str, given: tuple, at: tuple, reader) -> ReadLora:
        (path, scale), local_path = given, at[0]
        try:
            scale = parse_scale(scale, f"{path}: scale")
            if (problem := scale_problem(scale, LORA)) is not None:
                raise UsageError(f"{path}: scale {problem}")
            return ReadLora(path, scale, reader(local_path))
        except UserError as e:
            raise _named(e, names[role]) from e
    targets = {"unet": unet, "text_encoder": _shapes("text_encoder", configs["text_encoder"])} if files.loras else {}
    return dict(
        loras=tuple(read("loras", g, a, lambda p: read_spatial_lora(p, targets)) for g, a in zip(files.loras, local.loras)),
        motion_loras=tuple(read("motion_loras", g, a, lambda p: {"unet": read_motion_lora(p, mm.params)})
                           for g, a in zip(files.motion_loras, local.motion_loras)),
        domain_adapter=None if files.domain_adapter is None else read(
            "domain_adapter", files.domain_adapter, local.domain_adapter, lambda p: read_lora(p, {"unet": unet})))


def locate(path: str, what: str, patterns: list[str] | None = None, variant: str | None = None) -> str:
    """The local path of a model given as a path or as a hub id: its snapshot folder in the Hugging
    Face cache, downloaded when the hub is reachable (`convert.sources.resolve_source`; `patterns`:
    the files a repo of this kind needs, `convert.sources.HUB_PATTERNS`, default an SD model's; of
    their weights the set each folder's loader reads for `variant`).
    LoadError `<what> <path>: ...`, one line, for a path that does not exist (and is no hub id) or an
    id that cannot be had."""
    if not os.path.exists(path) and not is_hub_id(path):
        raise LoadError(f"{what} {path}: not found")
    try:
        return resolve_source(path, allow_patterns=patterns, variant=variant)
    except UserError as e:
        raise LoadError(f"{what} {e}") from e


def sd_source(path: str, cache_dir: str, what: str, overrides: dict | None = None,
              variant: str | None = None) -> SDSource:
    """An SD1.x model (diffusers folder, LDM single file, converted folder, or hub id: `locate`):
    its converted folder if written, else a checked conversion plan (headers read, shapes checked
    against the networks). `overrides`: config fields a single file cannot show (head counts, norm
    groups), per network; `variant`: a diffusers folder's weight variant (e.g. fp16). InputError
    naming `what` and the path for anything that is not an SD1.x model."""
    path = locate(path, what)
    if is_converted_base(path):
        return SDSource(path, path, _converted_configs(path), None)
    settings = dict(overrides or {}, **({"variant": variant} if variant and os.path.isdir(path) else {}))
    folder = os.path.join(cache_dir, "converted", "sd-" + cache_key(path) + (settings_key(settings) if settings else ""))
    if is_converted_base(folder):
        chosen = [weights_file(os.path.join(path, name), stems, variant)  # the choice the conversion made
                  for name, stems in SD_COMPONENTS.items()] if "variant" in settings else []
        return SDSource(path, folder, _converted_configs(folder), None, frozenset(map(weights_variant, chosen)))
    try:
        plan = plan_base(path, overrides=overrides, variant=variant)
    except UserError as e:  # re-raised with the role of the file
        raise LoadError(f"{what} {path}: {str(e).removeprefix(f'{path}: ')}") from e
    configs = {n: plan.networks[n].config for n in NETWORKS}
    return SDSource(path, folder, dict(configs, scheduler=dict(plan.scheduler_config)), plan, plan.variants)


def _converted_configs(folder: str) -> dict:
    files = {n: os.path.join(folder, f"{n}.safetensors") for n in NETWORKS}
    configs = {n: network_config(read_metadata(path), path, n) for n, path in files.items()}
    return dict(configs, scheduler=_read_scheduler_config(folder))


def _unseen_fields(configs: dict) -> dict:
    """The base's config fields that tensor shapes do not show: a DreamBooth file inherits them."""
    u, v, t = configs["unet"], configs["vae"], configs["text_encoder"]
    return {"unet": dict(norm_num_groups=u.norm_num_groups, attention_head_dim=u.attention_head_dim,
                         num_attention_heads=u.num_attention_heads),
            "vae": dict(norm_num_groups=v.norm_num_groups),
            "text_encoder": dict(num_attention_heads=t.num_attention_heads)}


def _check_same_family(db: SDSource, base: SDSource, names: Mapping[str, str]) -> None:
    for net in ("unet", "vae", "text_encoder"):
        fields = SHAPE_FIELDS[net]
        differ = {f: (getattr(db.configs[net], f), getattr(base.configs[net], f)) for f in fields
                  if getattr(db.configs[net], f) != getattr(base.configs[net], f)}
        if differ:
            f, (mine, theirs) = next(iter(differ.items()))
            raise LoadError(f"{names['dreambooth']} {db.path}: its {net} is not of the base's family "
                            f"({names['base']} {base.path}): {f} {_short(mine)} vs {_short(theirs)}")


def _short(value) -> str:
    return str(list(value) if isinstance(value, tuple) else value)


def read_sd_model(source: SDSource, what: str) -> dict:
    """The model's Flax params and configs: its converted folder, written first from `source.plan`
    if needed (the plan is consumed)."""
    if source.plan is not None and is_converted_base(source.folder):  # converted since (another job)
        source.plan.close()
    elif source.plan is not None:
        print(f"converting {what} {source.path} -> {source.folder}")
        try:
            convert_base(source.path, source.folder, plan=source.plan)
        except UserError as e:  # re-raised with the role of the file
            raise LoadError(f"{what} {source.path}: {e}") from e
    return _read_converted_base(source.folder)


def load_weights(checked: CheckedFiles, names: Mapping[str, str] = ROLES) -> LoadedWeights:
    """Assemble all weights of checked files (see the module docstring); each file is read once."""
    files = checked.files
    sd_model = read_sd_model(checked.base, names["base"])
    for name in NETWORKS:
        refuse_nonfinite(sd_model[name], f"{names['base']} {files.base} ({name})")
    if checked.dreambooth is not None:
        db = read_sd_model(checked.dreambooth, names["dreambooth"])
        for name in NETWORKS:
            sd_model[name] = refuse_nonfinite(db[name], f"{names['dreambooth']} {files.dreambooth} ({name})")
    nets = {"unet": sd_model["unet"], "text_encoder": sd_model["text_encoder"]}
    for lora in checked.loras:
        nets.update({c: _fused(nets[c], lora, c, files.lora_alpha_rule, names["loras"]) for c in lora.updates})
    unet = nets["unet"]
    if checked.domain_adapter is not None:
        unet = _fused(unet, checked.domain_adapter, flag=names["domain_adapter"])
    mm = checked.motion
    if mm is not None:
        motion = refuse_nonfinite(mm.params, f"{names['motion_module']} {files.motion_module}")
        for lora in checked.motion_loras:
            motion = _fused(motion, lora, flag=names["motion_loras"])
        unet = insert_motion(unet, motion, strict=False)
    if files.unet_checkpoint is not None:  # loaded after the motion module, replacing the whole UNet (the original)
        unet = read_unet3d_checkpoint(files.unet_checkpoint, sd_model["unet"], mm)
    return LoadedWeights(sd_model["unet_config"], mm.config if mm else None, sd_model["vae_config"],
                         sd_model["text_encoder_config"], unet, sd_model["vae"], nets["text_encoder"],
                         checked.tokenizer, sd_model["scheduler_config"],
                         dict(base=files.base, dreambooth=files.dreambooth, loras=list(files.loras),
                              motion_module=files.motion_module, motion_loras=list(files.motion_loras),
                              domain_adapter=files.domain_adapter, motion_version=mm.version if mm else None))


def _fused(params: Mapping, lora: ReadLora, component: str = "unet", alpha_rule: str = "kohya",
           flag: str = "LoRA") -> dict:
    fused = fuse(params, lora.updates[component], lora.scale, source=lora.path, alpha_rule=alpha_rule)
    return refuse_nonfinite(fused, f"{flag} {lora.path}:{lora.scale:g} (fused into the {component})",
                            only=set(lora.updates[component]))


def refuse_nonfinite(tree: Mapping, what: str, only: set | None = None,
                     harm: str = "every video sampled with it would come out NaN") -> Mapping:
    """`tree` unchanged, unless its leaves (those at the flattened paths `only`, if given) hold NaN or
    Inf: then LoadError `<what>: N tensors hold NaN/Inf: 'path' (NaN), ...; <harm>` (by default: every
    video sampled with them would come out NaN). One isfinite pass per checked leaf."""
    found = find_nonfinite(tree, only)
    if found:
        raise LoadError(f"{what}: {describe_nonfinite(found)}; {harm}")
    return tree


def scheduler_settings(scheduler_config: str | Mapping[str, Any], base_scheduler: Mapping[str, Any]) -> dict:
    """A diffusers scheduler config dict from "original" (AnimateDiff's inference config), "base"
    (`base_scheduler`, the base model's own), a dict, or the path of a scheduler_config.json."""
    if scheduler_config == "base" and not base_scheduler:
        warnings.warn("scheduler config 'base': the base model has none (no scheduler/ or scheduler_config.json); "
                      "using AnimateDiff's original one")  # one location: said once per run
        scheduler_config = "original"
    if isinstance(scheduler_config, str) and scheduler_config in ("original", "base"):
        return dict(ORIGINAL_SCHEDULER_KWARGS) if scheduler_config == "original" else dict(base_scheduler)
    if isinstance(scheduler_config, str):
        if not os.path.isfile(scheduler_config):
            raise LoadError(f"scheduler config {scheduler_config!r} not found")
        try:
            return read_json_object(scheduler_config)
        except (OSError, ValueError) as e:
            raise LoadError(f"scheduler config {scheduler_config}: {getattr(e, 'strerror', None) or e}") from None
    return dict(scheduler_config)


def pipeline_from_checked(checked: CheckedFiles, *, scheduler: str | None = None,
                          scheduler_config: str | Mapping[str, Any] = "original", dtype: str | None = None,
                          attention_impl: str = "auto", motion_input_norm: str = "frame", clip_skip: int = 0,
                          check: bool = True, names: Mapping[str, str] = ROLES, **kwargs) -> AnimateDiffPipeline:
    """An `AnimateDiffPipeline` from checked files: weights read and fused (`load_weights`), checked
    against their networks (`check`), then `AnimateDiffPipeline.build`. Options: `load_pipeline`."""
    if motion_input_norm not in ("frame", "joint"):
        raise UsageError(f"motion_input_norm must be 'frame' or 'joint', got {motion_input_norm!r}")
    w = load_weights(checked, names)
    motion_config = None if w.motion_config is None else replace(w.motion_config, input_norm=motion_input_norm)
    files = checked.files
    if check:
        for net, params, what in ((UNet3DConditionModel(w.unet_config, motion_config), w.unet,
                                   f"UNet ({files.base}, {files.motion_module})"),
                                  (AutoencoderKL(w.vae_config), w.vae, f"VAE ({files.base})"),
                                  (CLIPTextModel(w.text_config), w.text_encoder, f"text encoder ({files.base})")):
            check_shapes(params, module_param_shapes(net), what)
    sched = scheduler_settings(scheduler_config, w.scheduler_config)
    if scheduler is None and "_class_name" not in sched:
        scheduler = "ddim"
    pipe = AnimateDiffPipeline.build(w.unet_config, motion_config, w.vae_config, w.text_config, w.unet,
                                     w.vae, w.text_encoder, PromptTokenizer.from_pretrained(w.tokenizer_path),
                                     dtype=dtype, attention_impl=attention_impl, scheduler=scheduler,
                                     scheduler_config=sched, clip_skip=clip_skip, **kwargs)
    pipe.description.update(w.sources, motion_input_norm=motion_input_norm)
    pipe.make_sampler(1)  # validates the scheduler settings now, before any compilation
    return pipe


def load_pipeline(base: str, *, dreambooth: str | None = None, loras: Sequence[tuple[str, float]] = (),
                  motion_module: str | None = None, motion_loras: Sequence[tuple[str, float]] = (),
                  domain_adapter: tuple[str, float] | None = None, scheduler: str | None = None,
                  scheduler_config: str | Mapping[str, Any] = "original", dtype: str | None = None,
                  attention_impl: str = "auto", motion_input_norm: str = "frame", clip_skip: int = 0,
                  tokenizer: str | None = None, cache_dir: str | None = None, check: bool = True,
                  motion_version: str | None = None, motion_max_seq_length: int | None = None,
                  motion_heads: int | None = None, motion_norm_groups: int | None = None,
                  lora_alpha_rule: str = "kohya", unet_checkpoint: str | None = None,
                  variant: str | None = None, **kwargs) -> AnimateDiffPipeline:
    """An `AnimateDiffPipeline` from files: `check_files` then `pipeline_from_checked` (see the module
    docstring); every file read once, each check once.

    scheduler: "ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm" (None: DDIM, or the class of
    a given scheduler config). scheduler_config: "original" (AnimateDiff's inference config:
    linear 0.00085 -> 0.012, DDIM leading spacing, steps_offset 1), "base" (the base model's own
    `scheduler/` config), a diffusers config dict, or the path of a scheduler_config.json.
    motion_input_norm: "frame" (original AnimateDiff, the released checkpoints) or "joint"
    (diffusers' AnimateDiffTransformer3D). tokenizer: a CLIP tokenizer folder, needed when the base
    is a single file (which carries none). motion_version ("v1"/"v2"/"v3"), motion_max_seq_length,
    motion_heads, motion_norm_groups: what the user knows of the motion module (`load_motion`), needed
    for a file without a position-encoding buffer (version) or an original-format file of other than
    8 heads and 32 groups. lora_alpha_rule: "kohya" (W += scale · alpha/rank · up @ down)
    or "original" (W += scale · up @ down, how the original's prompt configs apply `lora_alpha`).
    variant: the weight variant (e.g. "fp16") of the diffusers folders among the files, where they
    have it. Model paths may be hub ids (`locate`). Other keyword arguments go to `AnimateDiffPipeline.build`.
    """
    files = ModelFiles(base, dreambooth=dreambooth, loras=tuple(loras), motion_module=motion_module,
                       motion_loras=tuple(motion_loras), domain_adapter=domain_adapter,
                       motion_version=motion_version, motion_max_seq_length=motion_max_seq_length,
                       motion_heads=motion_heads, motion_norm_groups=motion_norm_groups, tokenizer=tokenizer, lora_alpha_rule=lora_alpha_rule, unet_checkpoint=unet_checkpoint,
                       variant=variant)
    checked = check_files(files, cache_dir or cache_root())
    return pipeline_from_checked(checked, scheduler=scheduler, scheduler_config=scheduler_config, dtype=dtype,
                                 attention_impl=attention_impl, motion_input_norm=motion_input_norm,
                                 clip_skip=clip_skip, check=check, **kwargs)
