"""AnimateDiff motion modules -> Flax motion params plus the inferred `MotionConfig`.

Inputs: the original files (`mm_sd_v14.ckpt`, `mm_sd_v15_v2.ckpt`, `v3_sd15_mm.ckpt`, their
`.safetensors` re-saves, with or without the `"state_dict"` wrapper and the trainer's `module.`
prefix) and diffusers `MotionAdapter` folders. The output tree uses MotionAdapter names, Flax-style:

    down_blocks_0/motion_modules_1/transformer_blocks_0/attn1/to_q/kernel   (C, C)
    mid_block/motion_modules_0/...                                          (v2 only)
    up_blocks_3/motion_modules_2/proj_out/bias                              (C,)

which is exactly the motion part of `UNet3DConditionModel`'s params. The sinusoidal position
encoding (`pos_encoder.pe`, `pos_embed.pe`) is never loaded: its length L (from its [1, L, C] shape)
goes into `MotionConfig.max_seq_length` and the network regenerates it. The original code and diffusers
do load the buffer, so a file whose buffer is not the sinusoid (a trained or stretched encoding) is
refused unless the caller accepts the sinusoid in its place (`replace_pe`, `pe_length`).

The version (v1: joint resnet GroupNorm over all frames; v2/v3: per-frame) is not stored in a file;
the reference loaders read it from the layout (`convert.detect.version_from_layout`). Files without
the position-encoding buffer (the original trainer's saves register it non-persistent; AnimateLCM-style
files) do not show it, so there the caller must say it (`version=`), else `MotionModuleError`.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

import jax
import numpy as np

from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.text_files import read_json_object
from animatediff_jax.models.configs import MotionConfig, channel_mismatches
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.params import flatten, flax_path_to_torch, torch_key_to_flax, unflatten
from animatediff_jax.progress import progress_bar
from convert.detect import (ADAPTER_MAX_SEQ_LENGTH, OTHER_KINDS, adapter_version, checkpoint_kind, refuse_control,
                            version_from_layout)
from convert.io import StateDict, examples, open_state_dict
from convert.naming import torch_tensor_to_flax
from convert.sources import HUB_PATTERNS, resolve_source, weights_file, weights_variant

# original -> diffusers MotionAdapter, applied in this order (FORMATS.md §3)
_ORIGINAL_TO_DIFFUSERS = (
    (".norms.0.", ".norm1."), (".norms.1.", ".norm2."), (".ff_norm.", ".norm3."),
    (".attention_blocks.0.", ".attn1."), (".attention_blocks.1.", ".attn2."),
    (".temporal_transformer.", "."),
)
_BLOCK_TO_ORIGINAL = {"norm1": "norms.0", "norm2": "norms.1", "norm3": "ff_norm",
                      "attn1": "attention_blocks.0", "attn2": "attention_blocks.1"}
_MODULE_KEY = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.(.+)$")
_ORIGINAL_PE = re.compile(r"\.transformer_blocks\.\d+\.attention_blocks\.\d+\.pos_encoder\.pe$")
_SDXL_KEY = "up_blocks.2.motion_modules.0.norm.weight"
# image-UNet keys a full training checkpoint (the official trainer saves `unet.state_dict()`) also holds
_IMAGE_UNET_KEY = re.compile(r"^(conv_in|conv_out|conv_norm_out|time_embedding|"
                             r"(down_blocks|up_blocks)\.\d+\.(resnets|attentions|downsamplers|upsamplers)|"
                             r"mid_block\.(resnets|attentions))\.")
# what each version is, for the choice a file without a position encoding leaves to the caller
VERSIONS = {"v1": "position-encoding length 24, joint resnet GroupNorm over all frames, no mid-block module",
            "v2": "length 32, per-frame resnet GroupNorm, a mid-block module",
            "v3": "length 32, per-frame resnet GroupNorm, no mid-block module"}
DEFAULT_MAX_SEQ_LENGTH = {"v1": 24, "v2": 32, "v3": 32}
VERSION_FLAGS = ("`--motion-version` (python -m animatediff_jax.sample), `--version` (python -m convert motion) "
                 "or version= (Python)")
# what an original-format file does not store, by MotionConfig field: (name, sample flag, convert flag, Python)
GEOMETRY_FLAGS = {"num_attention_heads": ("heads", "--motion-heads", "--heads", "heads="),
                  "norm_num_groups": ("norm_num_groups", "--motion-norm-groups", "--norm-groups", "norm_num_groups=")}


class MotionModuleError(InputError):
    """A motion-module file that cannot be converted (the message names the file and the problem)."""


@dataclass(frozen=True)
class MotionModule:
    """Converted motion module: Flax params, network config, and where the modules sit in the UNet;
    `variants`: the weight variant (None: plain) of the MotionAdapter folder's weights file read
    (`weights_file`'s choice in `load_motion_module`), none for a file or params."""
    params: dict
    config: MotionConfig
    block_out_channels: tuple[int, ...]
    layers_per_block: int  # motion modules per down block (up blocks have one more)
    version: str  # "v1" | "v2" | "v3"
    variants: frozenset = frozenset()
    assumed: tuple[str, ...] = ()


ASSUMED_WORDS = {"num_attention_heads": "attention heads", "norm_num_groups": "GroupNorm groups"}


def assumed_message(source: str, mm: MotionModule, flags: Mapping[str, str]) -> str | None:
    """The warning for a module `mm` read from `source` whose heads or groups neither the user nor the file
    stated (`MotionModule.assumed`: an original-format file), naming the values assumed and how to state
    them (`flags`: by MotionConfig field, e.g. "--heads"); None when nothing was assumed."""
    if not mm.assumed:
        return None
    said = " and ".join(f"{getattr(mm.config, field)} {ASSUMED_WORDS[field]}" for field in mm.assumed)
    return (f"{source}: an original-format file stores neither attention heads nor GroupNorm groups; assumed "
            f"{said} (the original's default{'s' * (len(mm.assumed) > 1)}): if the module was trained with "
            f"others, pass {' '.join(f'{flags[field]} N' for field in mm.assumed)}")


# Original-format `.safetensors` written by `convert/export.py` keep what the format cannot show (the
# original's loaders assume 8 heads, 32 groups) in their metadata, under diffusers' MotionAdapter names.
HEADS_METADATA = "motion_num_attention_heads"
GROUPS_METADATA = "motion_norm_num_groups"


def original_key_to_diffusers(key: str) -> str | None:
    """Original AnimateDiff key -> MotionAdapter key; None for the position-encoding buffer."""
    if ".pos_encoder." in key:
        return None
    for old, new in _ORIGINAL_TO_DIFFUSERS:
        key = key.replace(old, new)
    return key


def diffusers_key_to_original(key: str) -> str:
    """MotionAdapter key -> original AnimateDiff key (inverse of `original_key_to_diffusers`)."""
    m = _MODULE_KEY.match(key)
    if not m:
        raise KeyError(f"not a motion-module key: {key!r}")
    tokens = m.group(3).split(".")
    if tokens[0] == "transformer_blocks" and len(tokens) > 2 and tokens[2] in _BLOCK_TO_ORIGINAL:
        tokens[2] = _BLOCK_TO_ORIGINAL[tokens[2]]
    return f"{m.group(1)}.motion_modules.{m.group(2)}.temporal_transformer.{'.'.join(tokens)}"


def misplaced_key(keys: Iterable[str]) -> str | None:
    """The first original-format key (one naming `temporal_transformer`) that is not where the original's
    modules put it -- `<block>.motion_modules.<i>.temporal_transformer.<part>` with the original's part
    names (`norms.0`, `attention_blocks.1`, `pos_encoder.pe`...) -- else None. Such a key would be renamed
    onto a valid MotionAdapter key (`down_blocks.0.motion_modules.temporal_transformer.0.norm.weight` as
    `...motion_modules.0.norm.weight`), so it is found by renaming there and back."""
    for key in keys:
        if ".temporal_transformer." not in key:
            continue
        if ".pos_encoder." in key and not _ORIGINAL_PE.search(key):
            return key
        named = key.replace(".pos_encoder.pe", ".to_q.weight")  # the buffer sits beside its attention's to_q
        try:
            if diffusers_key_to_original(original_key_to_diffusers(named)) == named:
                continue
        except KeyError:  # not under <block>.motion_modules.<i> at all
            pass
        return key
    return None


def refuse_misplaced(keys: Iterable[str], source: str) -> None:
    """MotionModuleError naming `source` and its first `misplaced_key`, if any (`convert motion` and
    `convert inspect` say the same)."""
    key = misplaced_key(sorted(keys))
    if key is not None:
        raise MotionModuleError(f"{source}: not a valid motion module: key {key} is not in the original AnimateDiff "
                                "layout (<block>.motion_modules.<i>.temporal_transformer.<part>, e.g. "
                                "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight)")


def sinusoid(length: int, channels: int) -> np.ndarray:
    """The fixed position encoding of the original code and diffusers as their buffer holds it,
    [1, length, channels] float32: the network's own `sinusoidal_positions`."""
    from animatediff_jax.models.embeddings import sinusoidal_positions  # local: jax only when a `pe` is met
    return sinusoidal_positions(length, channels)[None]


def motion_adapter_key_shapes(block_out_channels, layers_per_block: int, use_mid_block: bool,
                              num_transformer_blocks: int = 1) -> dict[str, tuple[int, ...]]:
    """Every MotionAdapter key (without `pos_embed`) of a module layout, with its PyTorch shape."""
    def module(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
        out = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
               f"{prefix}.proj_in.weight": (c, c), f"{prefix}.proj_in.bias": (c,),
               f"{prefix}.proj_out.weight": (c, c), f"{prefix}.proj_out.bias": (c,)}
        for t in range(num_transformer_blocks):
            b = f"{prefix}.transformer_blocks.{t}"
            for n in ("norm1", "norm2", "norm3"):
                out[f"{b}.{n}.weight"] = out[f"{b}.{n}.bias"] = (c,)
            for a in ("attn1", "attn2"):
                for p in ("to_q", "to_k", "to_v", "to_out.0"):
                    out[f"{b}.{a}.{p}.weight"] = (c, c)
                out[f"{b}.{a}.to_out.0.bias"] = (c,)
            out[f"{b}.ff.net.0.proj.weight"], out[f"{b}.ff.net.0.proj.bias"] = (8 * c, c), (8 * c,)
            out[f"{b}.ff.net.2.weight"], out[f"{b}.ff.net.2.bias"] = (c, 4 * c), (c,)
        return out

    shapes: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(block_out_channels):
        for j in range(layers_per_block):
            shapes.update(module(f"down_blocks.{i}.motion_modules.{j}", c))
    if use_mid_block:
        shapes.update(module("mid_block.motion_modules.0", block_out_channels[-1]))
    for i, c in enumerate(reversed(block_out_channels)):
        for j in range(layers_per_block + 1):
            shapes.update(module(f"up_blocks.{i}.motion_modules.{j}", c))
    return shapes


def check_layout(shapes: Mapping[str, tuple], expected: Mapping[str, tuple], source: str) -> None:
    """Raise naming missing/unexpected keys (a few examples each) or the first shape mismatches."""
    missing, unexpected = set(expected) - set(shapes), set(shapes) - set(expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {examples(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {examples(unexpected)}")
    wrong = [f"{k}: {tuple(s)} instead of {tuple(expected[k])}" for k, s in sorted(shapes.items())
             if k in expected and tuple(s) != tuple(expected[k])]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches, e.g. {'; '.join(wrong[:3])}")
    if problems:
        raise MotionModuleError(f"{source}: not a valid motion module: " + " | ".join(problems))


def _file_keys(state_dict: Mapping) -> tuple[Mapping, dict[str, tuple[int, ...]], dict[str, str]]:
    """(tensor mapping, {key: shape}, {clean key: key in the mapping}) without reading any tensor.

    Unwraps a `"state_dict"` nesting and drops the `module.` prefix the official trainer adds.
    A lazy `convert.io.StateDict` gives shapes from its header."""
    if isinstance(state_dict.get("state_dict"), Mapping):
        state_dict = state_dict["state_dict"]
    if isinstance(state_dict, StateDict):
        shapes = {k: tuple(state_dict.shape(k)) for k in state_dict}
    else:
        shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items() if hasattr(v, "shape")}
    prefixed = bool(shapes) and all(k.startswith("module.") for k in shapes)
    names = {(k[len("module."):] if prefixed else k): k for k in shapes}
    return state_dict, {clean: shapes[k] for clean, k in names.items()}, names


def infer_layout(shapes: Mapping[str, tuple], source: str):
    """(block_out_channels, layers_per_block, use_mid_block, num_transformer_blocks) from MotionAdapter keys."""
    keys = [m for m in (_MODULE_KEY.match(k) for k in shapes) if m]
    if not keys:
        raise MotionModuleError(f"{source}: no AnimateDiff motion-module keys found "
                                f"(expected e.g. down_blocks.0.motion_modules.0...; got {examples(shapes)})")
    downs = sorted({int(m.group(1).split(".")[1]) for m in keys if m.group(1).startswith("down_blocks")})
    channels = []
    for i in downs:
        shape = shapes.get(f"down_blocks.{i}.motion_modules.0.norm.weight")
        if shape is None:
            raise MotionModuleError(f"{source}: missing key down_blocks.{i}.motion_modules.0.norm.weight")
        channels.append(int(shape[0]))
    layers = 1 + max(int(m.group(2)) for m in keys if m.group(1) == "down_blocks.0")
    blocks = {int(k.split("transformer_blocks.")[1].split(".")[0]) for k in shapes if ".transformer_blocks." in k}
    return tuple(channels), layers, any(m.group(1) == "mid_block" for m in keys), 1 + max(blocks, default=0)


# a stored sinusoid differs from ours by float rounding only (float16: < 1e-3, bfloat16: < 4e-3)
PE_TOLERANCE = 1e-2
REPLACE_PE_FLAGS = ("`--replace-pe` (python -m convert motion, then sample or train from the converted file) "
                    "or replace_pe=True (Python)")


def pe_difference(shapes: Mapping[str, tuple], read) -> float:
    """Largest absolute difference of the [1, L, C] position-encoding buffers `shapes` names (read with
    `read`) from the standard sinusoid; NaN if a buffer holds NaN, 0.0 without buffers."""
    return max((float(np.max(np.abs(np.asarray(read(k), np.float32) - sinusoid(*shapes[k][1:])), initial=0.0))
                for k in shapes), default=0.0)


def pe_length(shapes: Mapping[str, tuple], read, source: str, *, refuse_other: bool = False,
              opt_in: str = REPLACE_PE_FLAGS) -> int | None:
    """Position-encoding length L read from the [1, L, C] buffers (`pos_encoder.pe`, `pos_embed.pe`; None
    without one). The network regenerates the sinusoid and cannot carry a stored encoding, so buffers off
    the sinusoid by more than `PE_TOLERANCE` (a trained or stretched encoding) make a module that behaves
    differently here than in the original and diffusers: a warning naming the difference, or with
    `refuse_other` MotionModuleError naming it and the opt-in (`opt_in`: the flags that pass it). MotionModuleError for a buffer of
    another shape or buffers of different lengths."""
    pes = {k: tuple(s) for k, s in shapes.items() if k.endswith("pos_encoder.pe") or k.endswith("pos_embed.pe")}
    bad = [k for k, s in sorted(pes.items()) if len(s) != 3 or s[0] != 1]
    if bad:
        raise MotionModuleError(f"{source}: {bad[0]} has shape {pes[bad[0]]}, expected (1, length, channels)")
    lengths = {s[1] for s in pes.values()}
    if len(lengths) > 1:
        raise MotionModuleError(f"{source}: position encodings of different lengths {sorted(lengths)}")
    if not pes:
        return None
    difference = pe_difference(pes, read)
    if not difference <= PE_TOLERANCE:  # NaN too
        said = (f"{source}: its stored position encoding ({len(pes)} buffers, e.g. {min(pes)}) is "
                f"not the standard sinusoid (max abs difference {difference:.3g}); the network here computes the "
                "sinusoid and cannot load a stored encoding, so the module behaves differently than in the "
                "original AnimateDiff and diffusers, which load it")
        if refuse_other:
            raise MotionModuleError(f"{said}. To use it with the sinusoid in its place anyway, pass {opt_in}")
        warnings.warn(f"{said}; the sinusoid is used in its place")
    return int(lengths.pop())


def resolve_version(version: str | None, use_mid_block: bool, pe_length: int | None, source: str) -> str:
    """The module's version: the caller's (`version`), checked against the layout, else the file's.

    The file shows it only through its position-encoding buffer (`version_from_layout`); without one
    (the original trainer's saves, AnimateLCM-style files) nothing is guessed: `MotionModuleError`
    lists the choices and the options that pass one. A caller's version whose mid-block module the
    file lacks (v2), or has (v1, v3), is refused as well; one its position-encoding length contradicts
    (v1 for a length other than 24, v3 for 24) is used, with a warning naming both. Raises `UsageError`
    for an unknown name.
    """
    if version is None:
        version = version_from_layout(use_mid_block, pe_length)
        if version is None:
            mid = "has a mid-block module (of these only v2 has one)" if use_mid_block else \
                "has no mid-block module (v1 or v3)"
            raise MotionModuleError(
                f"{source}: no position-encoding buffer (pos_encoder.pe), so the file does not say its motion-"
                f"module version; it {mid}. Pass the version with {VERSION_FLAGS}: "
                + "; ".join(f"{v}: {d}" for v, d in VERSIONS.items()) + "."
                + ("" if use_mid_block else " The original trainer's shipped config (configs/training/v1) trains v1."))
        return version
    if version not in VERSIONS:
        raise UsageError(f"{source}: unknown motion-module version {version!r}; choose one of {', '.join(VERSIONS)}")
    if use_mid_block != (version == "v2"):
        raise MotionModuleError(f"{source}: given version {version} ({VERSIONS[version]}), but the file "
                                f"{'has' if use_mid_block else 'has no'} mid-block module")
    shown = version_from_layout(use_mid_block, pe_length)
    if shown not in (None, version):
        warnings.warn(f"{source}: given version {version} ({VERSIONS[version]}), but the file's position encoding "
                      f"has {pe_length} positions, which makes it {shown}; the module is converted as {version}")
    return version


def sequence_length(given: int | None, stored: int | None, version: str, source: str) -> int:
    """`MotionConfig.max_seq_length`: the caller's (`given`), else the file's position-encoding length
    (`stored`), else the version's (`DEFAULT_MAX_SEQ_LENGTH`). A given length other than the stored one is
    used, with a warning naming both (the module was trained with at most `stored` frames)."""
    if None not in (given, stored) and given != stored:
        warnings.warn(f"{source}: max_seq_length {given} given, but the file's position encoding has {stored} "
                      f"positions; the module is converted with {given} (it was trained with at most {stored})")
    return given or stored or DEFAULT_MAX_SEQ_LENGTH[version]


def motion_from_state_dict(state_dict: Mapping, *, source: str = "<state dict>", heads: int = 8,
                           norm_num_groups: int = 32, max_seq_length: int | None = None,
                           version: str | None = None, dtype=np.float32, progress: bool = False,
                           device=None, assumed: tuple[str, ...] = (), replace_pe: bool = False) -> MotionModule:
    """Convert an original-format or MotionAdapter-format state dict (numpy values, or a lazy
    `convert.io.StateDict`: then keys and shapes are checked first and tensors read one at a time).

    `heads` and `norm_num_groups` cannot be read from the weights (every released module uses
    8 and 32); `assumed` names the `MotionModule.assumed` fields among them (the defaults, not said: an
    error they cause says how to say them). `version` ("v1" | "v2" | "v3", see `VERSIONS`) overrides the
    version the file's layout shows and is required when the file has no position-encoding buffer (`resolve_version`).
    `max_seq_length` overrides the length read from the position-encoding buffers (default without
    one: the version's, `DEFAULT_MAX_SEQ_LENGTH`); a version or length contradicting the buffers is used
    with a warning (`resolve_version`, `sequence_length`). Buffers that are not the standard sinusoid
    are refused unless `replace_pe` (`pe_length`: the network regenerates the sinusoid). Keys of the
    original naming not where the original puts them are refused (`refuse_misplaced`).
    `dtype` casts floating tensors (None keeps the file's dtype); `progress` shows a progress bar.
    From a lazy `.safetensors` the leaves are zero-copy views of the mapped file where no cast is
    needed (kernels transposed as views). `device` (True, a jax Device/Sharding) puts each leaf
    there one by one, releasing its source pages once it is on the device (as `convert.base.load_base`).
    """
    tensors, shapes, names = _file_keys(state_dict)
    refuse_control(shapes, source, "a motion module")
    kind = checkpoint_kind(shapes)
    if kind in OTHER_KINDS and kind not in ("motion_module", "motion_adapter"):  # a LoRA or a motion LoRA
        what, flag, use = OTHER_KINDS[kind]
        beside = " beside its motion module" if kind == "motion_lora" else ""
        raise MotionModuleError(f"{source}: this is {what}, not a motion module; pass it with {flag}{beside} "
                                f"(python -m animatediff_jax.sample), or {use}")
    # zero-copy views of a lazy file (memory-mapped); a cast or transpose is left to the caller / device_put
    get = tensors.view if isinstance(tensors, StateDict) else tensors.__getitem__
    read = lambda clean: get(names[clean])  # noqa: E731
    original = any(".temporal_transformer." in k for k in shapes)
    image_keys = [k for k in shapes if _IMAGE_UNET_KEY.match(k)]
    if image_keys and len(image_keys) < len(shapes):
        warnings.warn(f"{source}: ignoring {len(image_keys)} image-UNet keys (a full training checkpoint?), "
                      f"e.g. {examples(image_keys, 2)}; only the motion modules are converted")
        shapes = {k: v for k, v in shapes.items() if not _IMAGE_UNET_KEY.match(k)}
    refuse_misplaced(shapes, source)
    file_length = pe_length(shapes, read, source, refuse_other=not replace_pe)
    if original:
        renamed = {new: k for k in shapes if (new := original_key_to_diffusers(k)) is not None}
    else:
        renamed = {k: k for k in shapes if not k.endswith("pos_embed.pe")}
    shapes = {new: shapes[k] for new, k in renamed.items()}
    if _SDXL_KEY in shapes and shapes[_SDXL_KEY][-1] == 320:
        raise MotionModuleError(f"{source}: this is an SDXL motion module (320 channels at up_blocks.2); "
                                "only SD1.x motion modules are supported")
    channels, layers, mid, n_tb = infer_layout(shapes, source)
    check_layout(shapes, motion_adapter_key_shapes(channels, layers, mid, n_tb), source)
    version = resolve_version(version, mid, file_length, source)
    length = sequence_length(max_seq_length, file_length, version, source)
    for c in channels:
        bad = [(field, n) for field, n in (("num_attention_heads", heads), ("norm_num_groups", norm_num_groups))
               if c % n]
        if bad:
            unsaid = [GEOMETRY_FLAGS[field] for field, _ in bad if field in assumed]
            hint = "" if not unsaid else (
                " (the original's default, assumed: an original-format file stores no heads or groups; give the "
                "module's with " + " and ".join(
                    f"{sample} N (python -m animatediff_jax.sample), {flag} N (python -m convert) or {py} (Python)"
                    for _, sample, flag, py in unsaid) + ")")
            raise MotionModuleError(f"{source}: {c} channels are not divisible by "
                                    f"{' or '.join(f'{GEOMETRY_FLAGS[field][0]}={n}' for field, n in bad)}{hint}")
    config = MotionConfig(num_attention_heads=heads, num_transformer_blocks=n_tb, max_seq_length=length,
                          use_mid_block=mid, norm_num_groups=norm_num_groups,
                          resnet_norm="joint" if version == "v1" else "frame")
    flat = {}
    nonfinite = NonFinite(source, allow=True)  # a loader warns (convert's writers refuse)
    with progress_bar(f"motion module {Path(source).name}", total=len(renamed), enabled=progress,
                      unit="tensor") as bar:
        for key, file_key in renamed.items():  # one tensor in flight
            stored = np.asarray(read(file_key))
            array = stored if dtype is None else stored.astype(dtype, copy=False)
            path = torch_key_to_flax(key, array.ndim)
            flat[path] = torch_tensor_to_flax(path, array)
            if device is not None:
                flat[path] = jax.device_put(flat[path], None if device is True else device).block_until_ready()
            if device is not None or array is not stored:  # the data is touched anyway: report NaN/Inf by name
                nonfinite.check(key, array)
                if isinstance(tensors, StateDict):
                    tensors.release(names[file_key])  # its bytes now live elsewhere (a cast copy, a device)
            bar.update()
    nonfinite.report()
    return MotionModule(unflatten(flat), config, channels, layers, version, assumed=assumed)


def _adapter_config(cfg_file: Path) -> dict:
    """A MotionAdapter folder's config.json, the values read here checked (positive integers; heads and
    block_out_channels may be lists of them; heads and groups fit block_out_channels, as
    `models.configs.channel_mismatches`): MotionModuleError naming the file otherwise."""
    try:
        cfg = read_json_object(cfg_file)
    except ValueError as e:  # not UTF-8 text, not JSON, not an object
        raise MotionModuleError(f"{cfg_file}: {e}") from None
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
    for key, lists in (("motion_num_attention_heads", True), ("block_out_channels", True),
                       ("motion_norm_num_groups", False), ("motion_max_seq_length", False)):
        value = cfg.get(key)
        if value is not None and not (positive(value) or lists and isinstance(value, list) and value
                                      and all(map(positive, value))):
            raise MotionModuleError(f"{cfg_file}: {key} must be a positive integer{' or a list of them' * lists}, "
                                    f"got {value!r}")
    channels = cfg.get("block_out_channels")
    problems = channel_mismatches(
        "block_out_channels", tuple(channels) if isinstance(channels, list) else (channels,),
        motion_num_attention_heads=cfg.get("motion_num_attention_heads", 8),
        motion_norm_num_groups=cfg.get("motion_norm_num_groups", 32)) if channels is not None else []
    if problems:
        raise MotionModuleError(f"{cfg_file}: {'; '.join(problems)}")
    return cfg


def load_motion_module(path, *, heads: int | None = None, norm_num_groups: int | None = None,
                       max_seq_length: int | None = None, version: str | None = None,
                       variant: str | None = None, revision: str | None = None,
                       dtype=np.float32, progress: bool = False, device=None,
                       replace_pe: bool = False) -> MotionModule:
    """Read an original motion-module file (.ckpt/.pt/.bin/.safetensors; also the original trainer's
    `{"state_dict": {"module.<key>": ...}, "global_step": ...}` saves) or a MotionAdapter folder (whose
    config.json gives heads, groups, length and so the version; its weights in any layout
    `convert.sources.weights_file` reads: plain or `variant` such as fp16, whole or sharded), or a hub
    id of a MotionAdapter repo (e.g. guoyww/animatediff-motion-adapter-v1-5-2, at `revision`; found
    through the Hugging Face cache, `convert.sources.resolve_source`, offline too).
    `version` and `max_seq_length`: what the caller knows (a flag, an inference config); a file
    without `pos_encoder.pe` needs `version` (`resolve_version`); `replace_pe` accepts a stored position
    encoding that is not the sinusoid, the sinusoid used in its place (`pe_length`). Other arguments: see
    `motion_from_state_dict`. Raises `MotionModuleError` (`CheckpointError` for a folder without
    weights, a hub id that cannot be had)."""
    path = Path(resolve_source(os.fspath(path), revision, allow_patterns=HUB_PATTERNS["model"], variant=variant))
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise MotionModuleError(f"{path}: a MotionAdapter folder needs config.json (and its weights, "
                                    "diffusion_pytorch_model.*)")
        cfg = _adapter_config(cfg_file)
        weights = weights_file(str(path), variant=variant)
        if cfg.get("conv_in_channels"):
            raise MotionModuleError(f"{path}: a SparseCtrl adapter (conv_in_channels) is not a motion module")
        heads_cfg = cfg.get("motion_num_attention_heads")  # absent: diffusers' default, 8
        if isinstance(heads_cfg, (list, tuple)):
            if len(set(heads_cfg)) != 1:
                raise MotionModuleError(f"{path}: per-block head counts {heads_cfg} are not supported")
            heads_cfg = heads_cfg[0]
        heads = _agree(heads, heads_cfg, "attention heads", "config.json motion_num_attention_heads", path)
        norm_num_groups = _agree(norm_num_groups, cfg.get("motion_norm_num_groups"), "GroupNorm groups",
                                 "config.json motion_norm_num_groups", path)
        with open_state_dict(weights) as sd:
            mm = motion_from_state_dict(
                sd, source=str(path), heads=heads or 8,
                norm_num_groups=norm_num_groups or 32,
                max_seq_length=max_seq_length or cfg.get("motion_max_seq_length", ADAPTER_MAX_SEQ_LENGTH),
                version=version or adapter_version(cfg),  # the layout config.json states (pos_embed.pe would show)
                dtype=dtype, progress=progress, device=device, replace_pe=replace_pe)
        if tuple(cfg.get("block_out_channels", mm.block_out_channels)) != mm.block_out_channels:
            raise MotionModuleError(f"{path}: config.json block_out_channels {cfg['block_out_channels']} "
                                    f"disagree with the weights {list(mm.block_out_channels)}")
        return replace(mm, variants=frozenset({weights_variant(weights)}))
    with open_state_dict(path) as sd:
        stored = {key: _stored_int(sd.metadata, key, path) for key in (HEADS_METADATA, GROUPS_METADATA)}
        heads = _agree(heads, stored[HEADS_METADATA], "attention heads", f"metadata {HEADS_METADATA}", path)
        norm_num_groups = _agree(norm_num_groups, stored[GROUPS_METADATA], "GroupNorm groups",
                                 f"metadata {GROUPS_METADATA}", path)
        assumed = tuple(field for field, value in (("num_attention_heads", heads), ("norm_num_groups", norm_num_groups))
                        if value is None)
        return motion_from_state_dict(sd, source=str(path), heads=heads or 8, norm_num_groups=norm_num_groups or 32,
                                      max_seq_length=max_seq_length, version=version, dtype=dtype,
                                      progress=progress, device=device, assumed=assumed, replace_pe=replace_pe)


def _agree(given: int | None, stored: int | None, what: str, where: str, path) -> int | None:
    """The value the caller gave (a flag) or the one the file states; MotionModuleError naming both when
    they differ (the module would be described wrongly: a flag overruling a folder's config.json wrote a
    4-head module as 8-head, silently)."""
    if given is not None and stored is not None and given != stored:
        raise MotionModuleError(f"{path}: its {where} says {stored} {what}, not the {given} asked for (leave the "
                                "value out to use the file's)")
    return given if given is not None else stored


def _stored_int(metadata: Mapping[str, str], key: str, path) -> int | None:
    """A positive int our exporter stored in an original-format file's metadata, else None."""
    if key not in metadata:
        return None
    value = metadata[key]
    if not (isinstance(value, str) and value.isdigit() and int(value) > 0):
        raise MotionModuleError(f"{path}: metadata {key}={value!r} is not a positive integer")
    return int(value)


def motion_module_from_params(params: Mapping, config: MotionConfig, version: str) -> MotionModule:
    """`MotionModule` around Flax motion params (layout read from their shapes, then checked)."""
    shapes = {flax_path_to_torch(p): tuple(np.shape(v))[::-1] if p[-1] == "kernel" else tuple(np.shape(v))
              for p, v in flatten(params).items()}  # Linear kernels (in, out) -> PyTorch (out, in)
    layout = infer_layout(shapes, "motion params")
    check_layout(shapes, motion_adapter_key_shapes(*layout), "motion params")
    return MotionModule(dict(params), config, layout[0], layout[1], version)


def motion_metadata(mm: MotionModule) -> dict[str, str]:
    """Params-file metadata describing a motion module (with its config stored by `save_params`)."""
    return {"motion": json.dumps({"block_out_channels": list(mm.block_out_channels),
                                  "layers_per_block": mm.layers_per_block, "version": mm.version})}


def with_overrides(mm: MotionModule, **config_fields) -> MotionModule:
    """Same module with some `MotionConfig` fields replaced (e.g. input_norm="joint" for diffusers parity)."""
    return replace(mm, config=replace(mm.config, **config_fields))
