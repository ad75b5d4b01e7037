"""SD1.x ControlNets and AnimateDiff v3 SparseCtrl encoders -> Flax params plus their configs.

Sources (`load_controlnet(source)`):
- a diffusers `ControlNetModel` or `SparseControlNetModel` folder (`config.json` +
  `diffusion_pytorch_model.safetensors` / `.bin`, whole or sharded, plain or a variant such as fp16
  (`convert.sources.weights_file`); a pipeline folder's `controlnet/` subfolder), or a hub id of one (resolved through the Hugging Face cache, offline too);
- an LDM ("cldm") single file, `control_v11p_sd15_*.pth` / `.safetensors`: keys `control_model.*`
  (the v1.0 `control_sd15_*.pth` files also hold a whole SD model, which is ignored) or bare
  `input_blocks.*` / `input_hint_block.*` / `zero_convs.*` / `middle_block_out.*`. The encoder copy
  maps like the UNet's LDM keys (`convert.ldm.unet_key_to_diffusers`); `input_hint_block.0` ->
  `controlnet_cond_embedding.conv_in`, `input_hint_block.{2k}` -> `.blocks.{k-1}`, its last conv ->
  `.conv_out`; `zero_convs.N.0` -> `controlnet_down_blocks.N`; `middle_block_out.0` ->
  `controlnet_mid_block` (diffusers' `convert_controlnet_checkpoint` is the reference);
- a diffusers-named ControlNet single file (a `diffusion_pytorch_model.safetensors` on its own);
- the original v3 SparseCtrl `.ckpt` (`v3_sd15_sparsectrl_rgb.ckpt`, `..._scribble.ckpt`; optionally
  wrapped in `"state_dict"` / `"controlnet"`): diffusers UNet names for the encoder copy, with motion
  modules in the original AnimateDiff naming (`motion_modules.N.temporal_transformer.
  transformer_blocks.0.attention_blocks.0...`), renamed as `convert.motion.original_key_to_diffusers`;
- our own converted file (`python -m convert controlnet`: Flax params, config in the metadata).

Output: the Flax rename (`convert.naming`) of the equivalent diffusers `ControlNetModel` /
`SparseControlNetModel` state dict, without the motion modules' `pos_embed.pe` buffers (the network
regenerates the sinusoid; their length is `MotionConfig.max_seq_length`), a `ControlNetConfig`, and
for SparseCtrl the `MotionConfig` of its motion modules (one temporal self-attention each, none in
the mid block). Single files do not store what their shapes cannot show: the head count (SD1.x: 8,
for the encoder copy and the motion modules), `global_pool_conditions` (True only for the v1.1
shuffle ControlNet) and whether SparseCtrl concatenates its mask channel (all released ones do);
pass `overrides` for those.

Everything is planned from names and shapes first and checked against our Flax network's own
parameter shapes before any tensor is read; SDXL and SD2.x ControlNets, motion modules, LoRAs, base
models and truncated or corrupt files are refused with a `CheckpointError` naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import numpy as np

from animatediff_jax.checkpoint import load_config, save_params, store_dtype
from animatediff_jax.errors import UsageError
from animatediff_jax.models.configs import ControlNetConfig, MotionConfig, sparsectrl_motion_config, to_dict
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.params import unflatten
from convert import ldm
from convert.base import Leaf, check_leaves, flax_leaf
from convert.detect import (CONTROLNET_LDM_PREFIX, checkpoint_kind, control_layout, require_sd1_controlnet,
                            strip_module_prefix)
from convert.io import CheckpointError, StateDict, examples, open_state_dict
from convert.motion import original_key_to_diffusers, pe_length
from animatediff_jax.param_shapes import flax_param_shapes
from convert.sources import HUB_PATTERNS, resolve_source, weights_file, weights_variant

KINDS = ("controlnet", "sparsectrl")
CLASS_NAMES = {"ControlNetModel": "controlnet", "SparseControlNetModel": "sparsectrl"}
SPARSECTRL_HEADS = 8  # the motion modules' heads in the v3 SparseCtrl configs (not stored in the weights)
# diffusers SparseControlNetModel config keys of its motion modules (`sparsectrl_motion_config`)
MOTION_KEYS = ("motion_num_attention_heads", "motion_max_seq_length", "temporal_transformer_layers_per_block")
# metadata key of a converted SparseCtrl's MotionConfig (not "motion": that marks a converted motion module)
MOTION_METADATA = "motion_config"
_HINT = re.compile(r"^input_hint_block\.(\d+)\.(weight|bias)$")
_ZERO_CONV = re.compile(r"^zero_convs\.(\d+)\.0\.(weight|bias)$")
_MID_OUT = re.compile(r"^middle_block_out\.0\.(weight|bias)$")
_PE = ("pos_encoder.pe", "pos_embed.pe")
# what each non-control kind is and which sampler flag takes it, for the refusal
_OTHER_KINDS = {
    "motion_module": "an AnimateDiff motion module (pass it with --motion-module)",
    "motion_adapter": "a diffusers MotionAdapter (pass it with --motion-module)",
    "motion_lora": "a MotionLoRA (pass it with --motion-lora)",
    "lora_kohya": "a LoRA (pass it with --lora)", "lora_peft": "a LoRA (pass it with --lora)",
    "lora_diffusers_old": "a LoRA (pass it with --lora)",
    "ldm": "a Stable Diffusion model (pass it with --base or --dreambooth)",
    "diffusers_unet": "a Stable Diffusion UNet", "diffusers_vae": "a VAE", "clip_text": "a CLIP text encoder",
}


class LoadedControlNet(NamedTuple):
    """`load_controlnet`'s result: `kind` ("controlnet" | "sparsectrl"), the network config, the
    motion modules' config (SparseCtrl only, else None) and the Flax params (numpy leaves)."""
    kind: str
    config: ControlNetConfig
    motion: MotionConfig | None
    params: dict


@dataclass
class ControlNetPlan:
    """What a conversion will read: each Flax leaf as a view of its source tensor, the configs, and
    the open source file (`close()` it); `variants`: the weight variant (None: plain) of a diffusers
    folder's weights file read (`weights_file`'s choice), none for a single file."""
    kind: str
    config: ControlNetConfig
    motion: MotionConfig | None
    leaves: dict[tuple[str, ...], Leaf]
    source_format: str
    source: StateDict
    variants: frozenset = frozenset()

    def close(self) -> None:
        self.source.close()


# ----------------------------------------------------------------------------- LDM naming

def ldm_layers_per_block(keys) -> int:
    """layers_per_block of an LDM ControlNet (keys without `control_model.`): its input blocks are
    conv_in, `layers_per_block` per level and one downsampler between levels."""
    inputs = {k.split(".")[1] for k in keys if re.match(r"^input_blocks\.\d+\.", k)}
    downsamplers = {k.split(".")[1] for k in keys if re.match(r"^input_blocks\.\d+\.0\.op\.", k)}
    per, remainder = divmod(len(inputs) - 1 - len(downsamplers), len(downsamplers) + 1)
    if not inputs or remainder or per < 1:
        raise ValueError(f"inconsistent LDM ControlNet: {len(inputs)} input blocks for {len(downsamplers) + 1} "
                         "resolution levels")
    return per


def ldm_key_to_diffusers(key: str, layers_per_block: int, hint_out_index: int) -> str:
    """LDM ControlNet key (without `control_model.`) -> diffusers `ControlNetModel` key.
    `hint_out_index`: the index of the hint block's last conv (14 for SD1.x). Raises
    `ldm.UnknownKey` for a key the rules do not cover."""
    m = _HINT.match(key)
    if m:
        i, param = int(m.group(1)), m.group(2)
        if i == 0:
            return f"controlnet_cond_embedding.conv_in.{param}"
        if i == hint_out_index:
            return f"controlnet_cond_embedding.conv_out.{param}"
        if i % 2 == 0:  # odd indices are the SiLUs between the convs
            return f"controlnet_cond_embedding.blocks.{i // 2 - 1}.{param}"
        raise ldm.UnknownKey(key)
    m = _ZERO_CONV.match(key)
    if m:
        return f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"
    m = _MID_OUT.match(key)
    if m:
        return f"controlnet_mid_block.{m.group(1)}"
    if key.startswith(("output_blocks.", "out.")):  # a UNet's decoder half, which a ControlNet lacks
        raise ldm.UnknownKey(key)
    return ldm.unet_key_to_diffusers(key, layers_per_block)


def _ldm_entries(keys: list[str], path: str) -> dict[str, str]:
    """{diffusers key: file key} of an LDM ControlNet file (prefixed or bare keys)."""
    prefixed = [k for k in keys if k.startswith(CONTROLNET_LDM_PREFIX)]
    bare = {k[len(CONTROLNET_LDM_PREFIX):]: k for k in prefixed} if prefixed else {k: k for k in keys}
    hints = [int(m.group(1)) for m in map(_HINT.match, bare) if m]
    try:
        lpb = ldm_layers_per_block(bare)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    entries, unexpected = {}, []
    for k, file_key in bare.items():
        try:
            entries[ldm_key_to_diffusers(k, lpb, max(hints, default=-1))] = file_key
        except ldm.UnknownKey:
            unexpected.append(file_key)
    if unexpected:
        raise CheckpointError(f"{path}: {len(unexpected)} keys that an LDM ControlNet does not have: "
                              f"{examples(unexpected)}")
    return entries


# ----------------------------------------------------------------------------- configs from shapes

def _indices(keys, prefix: str) -> list[int]:
    """The distinct integers i of keys starting `prefix{i}.`, sorted."""
    n = len(prefix)
    return sorted({int(k[n:].split(".")[0]) for k in keys if k.startswith(prefix) and k[n:].split(".")[0].isdigit()})


def infer_config(shapes: Mapping[str, tuple[int, ...]], kind: str, path: str) -> dict[str, Any]:
    """The diffusers config dict (`_class_name` included) of a diffusers-named ControlNetModel /
    SparseControlNetModel state dict, from its shapes (SD1.x heads; SparseCtrl with its mask channel)."""
    keys = list(shapes)
    try:
        levels = _indices(keys, "down_blocks.")
        attention = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys) for i in levels]
        block_suffix = "Motion" if kind == "sparsectrl" else "2D"
        to_k = next((k for k in keys if k.endswith("attn2.to_k.weight")), None)
        proj_in = next((k for k in keys if k.startswith("down_blocks.") and k.endswith("attentions.0.proj_in.weight")),
                       None)
        config = {
            "_class_name": "SparseControlNetModel" if kind == "sparsectrl" else "ControlNetModel",
            "in_channels": shapes["conv_in.weight"][1],
            "block_out_channels": [shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels],
            "down_block_types": [("CrossAttnDownBlock" if a else "DownBlock") + block_suffix for a in attention],
            "layers_per_block": len(_indices(keys, "down_blocks.0.resnets.")),
            "norm_num_groups": 32, "attention_head_dim": 8,
        }
        if to_k is not None:
            config["cross_attention_dim"] = shapes[to_k][1]
        if proj_in is not None:
            config["use_linear_projection"] = len(shapes[proj_in]) == 2
        simplified = "controlnet_cond_embedding.weight" in shapes
        cond_in = shapes["controlnet_cond_embedding." + ("weight" if simplified else "conv_in.weight")]
        if not simplified:
            blocks = _indices(keys, "controlnet_cond_embedding.blocks.")
            config["conditioning_embedding_out_channels"] = [cond_in[0]] + [
                shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0] for j in blocks if j % 2]
        if kind == "sparsectrl":  # every released SparseCtrl concatenates the mask and zeroes the noisy input
            config.update(use_simplified_condition_embedding=simplified, concat_conditioning_mask=True,
                          conditioning_channels=cond_in[1] - 1, set_noisy_sample_input_to_zero=True)
        else:
            config["conditioning_channels"] = cond_in[1]
        return config
    except KeyError as e:
        raise CheckpointError(f"{path}: cannot infer the ControlNet config: missing {e}") from None
    except IndexError:  # a tensor of the wrong rank
        raise CheckpointError(f"{path}: cannot infer the ControlNet config: a key tensor has the wrong number "
                              "of dimensions") from None


def configs(d: Mapping[str, Any], kind: str, overrides: Mapping[str, Any] | None,
            path: str) -> tuple[ControlNetConfig, MotionConfig | None]:
    """(ControlNetConfig, SparseCtrl's MotionConfig or None) of a diffusers config dict with `overrides`
    (diffusers config keys: `ControlNetConfig` fields and `MOTION_KEYS`) applied on top."""
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(ControlNetConfig)} | set(MOTION_KEYS) | {"concate_conditioning_mask"}
    unknown = sorted(set(overrides) - known)  # concate_: the original sparse_controlnet.py's spelling
    if unknown:
        raise UsageError(f"overrides: unknown ControlNet config keys {unknown} for {path} (allowed: "
                         f"ControlNetConfig fields and {', '.join(MOTION_KEYS)})")
    d = {**d, **overrides}
    try:
        return ControlNetConfig.from_dict(d), sparsectrl_motion_config(d) if kind == "sparsectrl" else None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported ControlNet config ({e})") from None


# ----------------------------------------------------------------------------- planning

def _plan(sd: StateDict, entries: Mapping[str, str], kind: str, config: ControlNetConfig,
          motion: MotionConfig | None, source_format: str, variants: frozenset = frozenset()) -> ControlNetPlan:
    """Leaves of `entries` ({diffusers key: file key}), checked against our network's param shapes."""
    leaves = dict(flax_leaf(d, tuple(sd.shape(k)), sd, k, _identity) for d, k in entries.items())
    return _checked(ControlNetPlan(kind, config, motion, leaves, source_format, sd, variants))


def _checked(plan: ControlNetPlan) -> ControlNetPlan:
    """`plan`, if its leaves are exactly our network's params (`CheckpointError` naming the file)."""
    kind, config, motion = plan.kind, plan.config, plan.motion
    want = flax_param_shapes("sparsectrl", (config, motion)) if kind == "sparsectrl" else \
        flax_param_shapes("controlnet", config)
    check_leaves(plan.leaves, want, plan.source.path,
                 f"does not match our {'SparseCtrl encoder' if kind == 'sparsectrl' else 'ControlNet'} with "
                 f"config {config}" + (f" and motion modules {motion}" if motion else ""))
    return plan


def _plan_stored(sd: StateDict, overrides) -> ControlNetPlan:
    """A file written by `convert_controlnet`: Flax params, configs in the metadata."""
    if overrides:
        raise UsageError(f"overrides: {sd.path} is already converted (its config is stored); overrides apply to "
                         "PyTorch sources")
    meta = sd.metadata
    config = load_config(meta, sd.path)
    if not isinstance(config, ControlNetConfig) or meta.get("kind") not in KINDS:
        raise CheckpointError(f"{sd.path}: holds {meta.get('config_class', 'no config')} params, not a ControlNet")
    try:
        motion = MotionConfig.from_dict(json.loads(meta[MOTION_METADATA])) if meta.get(MOTION_METADATA) else None
    except (ValueError, TypeError, AttributeError) as e:  # json errors are ValueErrors
        raise CheckpointError(f"{sd.path}: broken MotionConfig in the metadata ({type(e).__name__}: {e})") from None
    leaves = {tuple(k.split("/")): Leaf(tuple(sd.shape(k)), np.dtype(sd.dtype(k)), lambda k=k: sd.view(k), k, sd)
              for k in sd}
    return _checked(ControlNetPlan(meta["kind"], config, motion, leaves, "flax", sd))


def _identity(a: np.ndarray) -> np.ndarray:
    return a


# How a SparseCtrl encoder whose stored position encoding is off the sinusoid is accepted anyway.
REPLACE_PE_FLAGS = ("`--replace-pe` (python -m convert controlnet, then --sparsectrl the converted file) or "
                    "replace_pe=True (Python)")


def _motion_entries(shapes: Mapping[str, tuple[int, ...]], read, path: str,
                    replace_pe: bool) -> tuple[dict[str, str], int | None]:
    """({diffusers key: key}, position-encoding length) of a SparseCtrl state dict: motion-module keys
    in the original naming are renamed, the `pe` buffers dropped (their length kept, `pe_length`: buffers
    off the sinusoid refused unless `replace_pe`, as a motion module's are)."""
    length = pe_length({k: s for k, s in shapes.items() if k.endswith(_PE)}, read, path,
                       refuse_other=not replace_pe, opt_in=REPLACE_PE_FLAGS)
    entries = {(original_key_to_diffusers(k) if ".temporal_transformer." in k else k): k
               for k in shapes if not k.endswith(_PE)}
    return entries, length


def _refuse_other(kind: str, keys: list[str], path: str) -> None:
    if kind in KINDS:
        return
    what = _OTHER_KINDS.get(kind)
    raise CheckpointError(f"{path}: " + (f"this is {what}, not a ControlNet or SparseCtrl encoder" if what else
                                         f"not a ControlNet or SparseCtrl file (keys: {examples(keys, 3)})"))


def _plan_file(path: str, overrides, replace_pe: bool) -> ControlNetPlan:
    sd = open_state_dict(path)
    try:
        if sd.metadata.get("format") == "flax":
            return _plan_stored(sd, overrides)
        raw = list(sd)
        strip = bool(raw) and all(k.startswith("module.") for k in raw)
        names = {strip_module_prefix(k) if strip else k: k for k in raw}  # clean key -> file key
        kind = checkpoint_kind(names, sd.metadata)
        _refuse_other(kind, list(names), path)
        shapes = {k: tuple(sd.shape(f)) for k, f in names.items()}
        bare = {(k[len(CONTROLNET_LDM_PREFIX):] if k.startswith(CONTROLNET_LDM_PREFIX) else k): s
                for k, s in shapes.items()}
        require_sd1_controlnet(list(bare), bare.__getitem__, path)
        length, layout = None, control_layout(names)
        if layout == "ldm":
            entries = _ldm_entries(list(names), path)
        elif kind == "sparsectrl":
            entries, length = _motion_entries(shapes, lambda k: sd.view(names[k]), path, replace_pe)
        else:
            entries = {k: k for k in names}
        inferred = infer_config({d: shapes[k] for d, k in entries.items()}, kind, path)
        if kind == "sparsectrl":
            blocks = {k.split(".transformer_blocks.")[1].split(".")[0] for k in entries
                      if ".motion_modules." in k and ".transformer_blocks." in k}
            inferred.update(motion_num_attention_heads=SPARSECTRL_HEADS, motion_max_seq_length=length or 32,
                            temporal_transformer_layers_per_block=max(len(blocks), 1))
        config, motion = configs(inferred, kind, overrides, path)
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        return _plan(sd, {d: names[k] for d, k in entries.items()}, kind, config, motion, f"{kind}-{layout}-{ext}")
    except BaseException:
        sd.close()
        raise


def _plan_folder(folder: str, variant: str | None, overrides, replace_pe: bool) -> ControlNetPlan:
    if not os.path.isfile(os.path.join(folder, "config.json")) and \
            os.path.isfile(os.path.join(folder, "controlnet", "config.json")):
        folder = os.path.join(folder, "controlnet")  # a pipeline folder
    cfg_path = os.path.join(folder, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a diffusers ControlNet folder: {cfg_path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: unreadable config ({type(e).__name__}: {e})") from None
    kind = CLASS_NAMES.get(cfg.get("_class_name")) if isinstance(cfg, dict) else None
    if kind is None:
        raise CheckpointError(f"{cfg_path}: not a ControlNet config (_class_name "
                              f"{cfg.get('_class_name') if isinstance(cfg, dict) else None!r}; expected one of "
                              f"{', '.join(CLASS_NAMES)})")
    sd = open_state_dict(weights_file(folder, variant=variant))
    try:
        keys = list(sd)
        require_sd1_controlnet(keys, sd.shape, sd.path)
        config, motion = configs(cfg, kind, overrides, cfg_path)
        entries, length = _motion_entries({k: tuple(sd.shape(k)) for k in keys}, sd.view, sd.path, replace_pe)
        if motion is not None and length not in (None, motion.max_seq_length):
            raise CheckpointError(f"{sd.path}: position encodings of length {length}, but {cfg_path} says "
                                  f"motion_max_seq_length {motion.max_seq_length}")
        fmt = "safetensors" if ".safetensors" in os.path.basename(sd.path) else "bin"
        return _plan(sd, entries, kind, config, motion, f"{kind}-diffusers-{fmt}",
                     frozenset({weights_variant(sd.path)}))
    except BaseException:
        sd.close()
        raise


def resolve_controlnet(source: str, revision: str | None = None, variant: str | None = None) -> str:
    """A local file or folder as given; otherwise a hub id of a diffusers ControlNet (its config and
    the weights of `variant`, or its plain ones), through the Hugging Face cache
    (`convert.sources.resolve_source`)."""
    return resolve_source(source, revision, allow_patterns=HUB_PATTERNS["model"], variant=variant)


def plan_controlnet(source: str, *, variant: str | None = None, revision: str | None = None,
                    overrides: Mapping[str, Any] | None = None, replace_pe: bool = False) -> ControlNetPlan:
    """Plan reading a ControlNet / SparseCtrl source (no tensor data read yet but a SparseCtrl encoder's
    position-encoding buffers). `overrides`: diffusers config keys applied over the folder's config.json or
    the single file's inferred config, for what a file cannot show (e.g. {"global_pool_conditions": True}
    for the shuffle ControlNet, {"motion_num_attention_heads": 8}). A SparseCtrl encoder whose stored
    position encoding is off the sinusoid (the network computes the sinusoid) is refused unless
    `replace_pe`. Raises `CheckpointError` naming the file (`UsageError` for an unknown override key;
    `MotionModuleError` for the encoding)."""
    path = resolve_controlnet(os.fspath(source), revision, variant)
    if os.path.isdir(path):
        return _plan_folder(path, variant, overrides, replace_pe)
    return _plan_file(path, overrides, replace_pe)


# ----------------------------------------------------------------------------- load / convert

def _read(plan: ControlNetPlan, dtype: str | None, nonfinite: NonFinite) -> dict:
    """The plan's Flax params: zero-copy views, or cast copies (checked for NaN/Inf by name)."""
    flat = {}
    for p, leaf in plan.leaves.items():
        a = leaf.view()
        target = store_dtype(dtype, leaf.dtype)
        if a.dtype != target:
            a = nonfinite.check(leaf.source_key, a.astype(target, order="K"))  # keeps a transposed view's layout
            leaf.source.release(leaf.source_key)  # the copy holds the bytes now
        flat[p] = a
    return unflatten(flat)


def load_controlnet(source: str, *, dtype: str | None = None, variant: str | None = None,
                    revision: str | None = None, overrides: Mapping[str, Any] | None = None,
                    replace_pe: bool = False) -> LoadedControlNet:
    """(kind, ControlNetConfig, MotionConfig | None, Flax params) of any source above.

    `dtype` ("float32", "bfloat16", "float16") casts floating params; None keeps the file's dtype, and
    then leaves are zero-copy views of the memory-mapped file (the file must stay in place while they
    live). A cast touches every tensor, and then NaN/Inf tensors are named in one warning on stderr
    (`nonfinite.py`; `convert_controlnet` refuses them). Raises `CheckpointError` naming the file."""
    plan = plan_controlnet(source, variant=variant, revision=revision, overrides=overrides, replace_pe=replace_pe)
    try:
        nonfinite = NonFinite(os.fspath(source), allow=True)  # a loader warns
        params = _read(plan, dtype, nonfinite)
        nonfinite.report()
    finally:
        plan.close()
    return LoadedControlNet(plan.kind, plan.config, plan.motion, params)


def convert_controlnet(source: str, output: str, *, dtype: str | None = None, variant: str | None = None,
                       revision: str | None = None, overrides: Mapping[str, Any] | None = None,
                       allow_nonfinite: bool = False, plan: ControlNetPlan | None = None,
                       replace_pe: bool = False) -> LoadedControlNet:
    """Write a ControlNet / SparseCtrl source as one Flax params `.safetensors` (`output`), the
    `ControlNetConfig` in its metadata (`config`, `config_class`), `source` ("<format>:<path>"),
    `kind` and, for SparseCtrl, the `MotionConfig` (`MOTION_METADATA`, JSON). Written atomically, one tensor
    at a time (`save_params`); tensors holding NaN/Inf are refused by name (`InputError`, nothing
    written) unless `allow_nonfinite`. Returns what was written (its params views of the source). `plan`:
    the `plan_controlnet` of `source` when the caller has it already (it is consumed; the planning
    arguments are then unused)."""
    nonfinite = NonFinite(os.fspath(source), allow=allow_nonfinite)
    plan = plan or plan_controlnet(source, variant=variant, revision=revision, overrides=overrides,
                                   replace_pe=replace_pe)
    try:
        net = LoadedControlNet(plan.kind, plan.config, plan.motion, _read(plan, None, nonfinite))
        extra = {"kind": net.kind}
        if net.motion is not None:
            extra[MOTION_METADATA] = json.dumps(to_dict(net.motion))
        save_params(output, net.params, config=net.config, dtype=dtype, metadata=extra, nonfinite=nonfinite,
                    source=f"{plan.source_format}:{os.path.abspath(os.fspath(source))}")
    finally:
        plan.close()
    return net
