"""LoRA files -> a normalized `{flax kernel path: LoraWeights}` per network, fused into Flax params.

Key styles understood (any of them for the UNet, the text encoder, or a motion module):

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight   kohya, diffusers names
    lora_unet_input_blocks_4_1_proj_in.lora_up.weight / .alpha                              kohya, LDM names
    lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight (r, in, kh, kw)                LoCon conv
    lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight                   kohya text encoder
    unet.down_blocks.0...attn1.to_q.lora_A.weight / lora_B (alphas in `lora_adapter_metadata`)  diffusers/PEFT
    base_model.model.down_blocks.0...to_q.lora_A.weight (+ adapter_config.json beside it)        PEFT save_pretrained
    ...attn1.processor.to_q_lora.down.weight / .up                                           older diffusers,
                                                                                             MotionLoRA, v3 adapter

Fusing (`alpha_rule`): "kohya" (kohya / A1111 / diffusers, the default) W += scale · (alpha / rank) · up @ down,
with rank = down.shape[0] and alpha = rank when the file gives none; "original" (the original AnimateDiff's
`convert_lora`, which its prompt configs' `lora_alpha` means) W += scale · up @ down, the file's alphas
ignored. PEFT adapters (a `save_pretrained` folder, or its `adapter_model.safetensors` with
`adapter_config.json` beside it) take alpha from the config: `alpha_pattern` over `lora_alpha`, and
with `use_rslora` the scale alpha / sqrt(rank) (peft's `LoraLayer.update_layer`); `rank_pattern` needs
nothing, the rank is the factors' shape.

NaN / Inf in a LoRA file (`animatediff_jax/nonfinite.py`): every reader here names the file and its
tensors: with `allow_nonfinite=True` (loaders: `sample --lora`, `--motion-lora`, `--domain-adapter`)
as a warning, with False (converters: `python -m convert lora | motion-lora | export-motion-lora`
without `--allow-nonfinite`) as an `InputError` before anything is fused or written.

The product is formed in PyTorch layout ((out, in) or (out, in, kh, kw)) and laid out as the Flax
kernel ((in, out) / HWIO) by the same rule as the weights themselves.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.params import flatten, flax_path_to_torch, unflatten
from animatediff_jax.path_scale import split_path_scale
from convert.detect import FAMILY_NAMES, lora_family
from convert.io import examples, open_state_dict
from convert.ldm import UnknownKey, unet_key_to_ldm
from convert.motion import original_key_to_diffusers
from convert.naming import torch_tensor_to_flax
from convert.sources import as_given

Path = tuple[str, ...]

_ROLE_SUFFIXES = (  # (suffix, role) tried in order; the module name is what precedes the suffix
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_A.weight", "down"),
    (".lora_B.weight", "up"), (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"), (".alpha", "alpha"),
)
_PROCESSOR = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_KOHYA = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"}
_DOTTED = {"unet.": "unet", "text_encoder.": "text_encoder"}
ALPHA_RULES = ("kohya", "original")  # see the module docstring
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_CONFIG = "adapter_config.json"
# a LoRA folder's weights, first found wins: a PEFT adapter's, diffusers' `save_lora_weights`, and the
# one file of the hub's diffusers MotionLoRA / v3 adapter repos (guoyww/animatediff-motion-lora-*)
LORA_FOLDER_WEIGHTS = (*PEFT_WEIGHTS, "pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin",
                       "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_PEFT_PREFIX = "base_model.model."
_PEFT_DEFAULT_ALPHA = 8  # peft's LoraConfig default, which peft itself uses when a config omits lora_alpha


class LoraError(InputError):
    """A LoRA that cannot be applied; the message names the file and the problem."""


class LoraTargetsAbsent(LoraError):
    """LoRA modules that target layers the model does not have; `absent` holds their names in the file."""

    def __init__(self, message: str, absent: Sequence[str]):
        super().__init__(message)
        self.absent = list(absent)


class LoraScaleError(UsageError, LoraError):
    """A LoRA scale or alpha that is not a finite number (a flag or config value: exit code 2)."""


@dataclass(frozen=True)
class LoraWeights:
    """One low-rank update in PyTorch layout: up (out, r[, 1, 1]), down (r, in[, kh, kw])."""
    up: np.ndarray
    down: np.ndarray
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, alpha_rule: str = "kohya") -> np.ndarray:
        """(alpha / rank) · up @ down ("kohya") or up @ down ("original"), shaped like the PyTorch weight
        (float64)."""
        if alpha_rule not in ALPHA_RULES:
            raise ValueError(f"alpha_rule must be one of {ALPHA_RULES}, got {alpha_rule!r}")
        up = np.asarray(self.up, np.float64).reshape(self.up.shape[0], self.rank)
        down = np.asarray(self.down, np.float64).reshape(self.rank, -1)
        factor = self.alpha / self.rank if alpha_rule == "kohya" else 1.0
        return (factor * (up @ down)).reshape((up.shape[0],) + tuple(self.down.shape[1:]))


def parse_scale(value, what: str = "LoRA scale") -> float:
    """A finite float, or a `LoraScaleError` (`<what>: must be a number, got ...`)."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise LoraScaleError(f"{what}: must be a number, got {value!r}") from None
    if not math.isfinite(scale):
        raise LoraScaleError(f"{what}: must be a finite number, got {value!r}")
    return scale


# ----------------------------------------------------------------------------- reading keys

def split_keys(state_dict: Mapping[str, np.ndarray], source: str) -> dict[str, dict[str, np.ndarray]]:
    """{module name as written in the file: {"up"|"down"|"alpha": array}}; refuses incomplete pairs."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    unknown = []
    for key, value in state_dict.items():
        m = _PROCESSOR.match(key)
        if m:
            name = f"{m.group(1)}.{'to_out.0' if m.group(2) == 'to_out' else m.group(2)}"
            modules.setdefault(name, {})[m.group(3)] = value
            continue
        for suffix, role in _ROLE_SUFFIXES:
            if key.endswith(suffix):
                modules.setdefault(key[: -len(suffix)], {})[role] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise LoraError(f"{source}: {len(unknown)} keys are not LoRA weights, e.g. {examples(unknown)} "
                        "(LoHa/LoKr/DoRA and other non-LoRA adapters are not supported)")
    broken = [n for n, r in modules.items() if "up" not in r or "down" not in r]
    if broken:
        raise LoraError(f"{source}: {len(broken)} modules lack an up or down matrix, e.g. {examples(broken)}")
    if not modules:
        raise LoraError(f"{source}: no LoRA weights found")
    return modules


def _component(name: str) -> tuple[str, str, bool]:
    """(network, module name without prefix, kohya-underscored?) of a module name from a file."""
    for prefix, component in _KOHYA.items():
        if name.startswith(prefix):
            return component, name[len(prefix):], True
    for prefix, component in _DOTTED.items():
        if name.startswith(prefix):
            return component, name[len(prefix):], False
    return "unet", name, False  # processor-style files (MotionLoRA, v3 adapter, old diffusers) name UNet modules


def _motion_rename(name: str) -> str:
    """Original AnimateDiff module names (`temporal_transformer`, `attention_blocks.N`) -> MotionAdapter names."""
    if ".temporal_transformer." not in name:
        return name
    return original_key_to_diffusers(name + ".weight")[: -len(".weight")]


def _metadata_alphas(metadata: Mapping[str, str]) -> dict[str, dict]:
    """{component: {"lora_alpha": float, "alpha_pattern": {...}}} from diffusers' `lora_adapter_metadata`."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    out: dict[str, dict] = {}
    for key, value in json.loads(raw).items():
        component, _, field = key.partition(".")
        out.setdefault(component, {})[field] = value
    return out


def _alpha(component: str, module: str, found: Mapping[str, np.ndarray], rank: int, meta: Mapping) -> float:
    """One module's alpha: its `.alpha` tensor (kohya), else its adapter config's (`alpha_pattern`
    matched as peft's `get_pattern_key` does, over `lora_alpha`; `use_rslora` scales alpha / sqrt(rank),
    written here as the alpha that gives it), else rank (scale 1)."""
    if "alpha" in found:
        return float(np.asarray(found["alpha"]).reshape(()))
    cfg = meta.get(component, {})
    alpha = cfg.get("lora_alpha")
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
            break
    if alpha is None:
        return float(rank)
    return float(alpha) * (math.sqrt(rank) if cfg.get("use_rslora") else 1.0)


# ----------------------------------------------------------------------------- resolving targets

def _strip_text_model(name: str, sep: str) -> str:
    prefix = f"text_model{sep}"
    return name[len(prefix):] if name.startswith(prefix) else name


def module_index(params: Mapping, component: str = "unet") -> dict[str, Path]:
    """{module name: Flax kernel path} for every Linear/conv of `params`, under each name a LoRA may use:
    diffusers dotted (`down_blocks.0.attentions.0.proj_in`), kohya underscored, and for a UNet the
    LDM names (`input_blocks.1.1.proj_in`). Text-encoder names drop a leading `text_model.`."""
    kernels = [p for p in flatten(params) if p[-1] == "kernel"]
    index: dict[str, Path] = {}
    ldm = _ldm_namer(params) if component == "unet" else None
    for path in kernels:
        name = flax_path_to_torch(path)[: -len(".weight")]
        names = [_strip_text_model(name, ".") if component == "text_encoder" else name]
        if ldm is not None:
            names += ldm(name)
        for n in names:
            index[n] = path
            index["_" + n.replace(".", "_")] = path  # "_" marks the kohya spelling
    return index


def _ldm_namer(params: Mapping):
    """diffusers UNet module name -> [its LDM name] (empty for modules LDM lacks, e.g. motion modules)."""
    top = params.get("down_blocks_0", {})
    layers = sum(1 for k in top if k.startswith("resnets_"))
    if not layers:
        return None
    up_attn = ["attentions_0" in params[b] for b in sorted(
        (k for k in params if k.startswith("up_blocks_")), key=lambda k: int(k.split("_")[-1]))]

    def namer(name: str) -> list[str]:
        try:
            return [unet_key_to_ldm(name + ".weight", layers, up_attn)[: -len(".weight")]]
        except UnknownKey:
            return []
    return namer


def normalize(state_dict: Mapping[str, np.ndarray], targets: Mapping[str, Mapping], *, source: str,
              metadata: Mapping[str, str] | None = None, lora_configs: Mapping[str, Mapping] | None = None,
              skip_other: bool = False) -> dict[str, dict[Path, LoraWeights]]:
    """{component: {flax kernel path: LoraWeights}} of a LoRA state dict, resolved against the
    params of each component in `targets` ({"unet": ..., "text_encoder": ...}). Weights for a
    component not in `targets` are an error, or skipped with `skip_other`. Alphas of weights
    without `.alpha`: from `lora_configs` ({component: peft LoraConfig fields}) if given, else from
    the file's `metadata` (diffusers' `lora_adapter_metadata`), else rank."""
    meta = lora_configs if lora_configs is not None else _metadata_alphas(metadata or {})
    indexes = {c: module_index(p, c) for c, p in targets.items()}
    out: dict[str, dict[Path, LoraWeights]] = {}
    absent: list[str] = []
    for raw, found in split_keys(state_dict, source).items():
        component, name, kohya = _component(raw)
        if component not in indexes:
            if skip_other:
                continue
            raise LoraError(f"{source}: has {component} LoRA weights (e.g. {raw!r}) but no {component} "
                            f"params were given to apply them to")
        module = name  # as the adapter config's patterns name it
        if component == "text_encoder":
            name = _strip_text_model(name, "_" if kohya else ".")
        key = "_" + name if kohya else _motion_rename(name)
        path = indexes[component].get(key)
        if path is None:
            absent.append(raw)
            continue
        up, down = np.asarray(found["up"]), np.asarray(found["down"])
        weights = LoraWeights(up, down, _alpha(component, module, found, int(down.shape[0]), meta))
        if path in out.setdefault(component, {}):
            raise LoraError(f"{source}: two entries target {'/'.join(path)} (one is {raw!r})")
        out[component][path] = weights
    if absent:
        raise LoraTargetsAbsent(f"{source}: {len(absent)} LoRA modules target layers the model does not have, "
                                f"e.g. {examples(absent)}", absent)
    return out


def lora_weights_file(path) -> str:
    """The weights file of a LoRA given as a file, or as a folder (a PEFT `save_pretrained` adapter,
    a hub repo's snapshot): the first of `LORA_FOLDER_WEIGHTS` it holds. Raises LoraError for a folder
    without one."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    for name in LORA_FOLDER_WEIGHTS:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise LoraError(f"{as_given(path)}: a LoRA folder must be a PEFT adapter (save_pretrained output) or hold a LoRA's "
                    f"weights, but it has none of {', '.join(LORA_FOLDER_WEIGHTS)}")


def peft_lora_config(path: str) -> dict:
    """The fields of a PEFT `adapter_config.json` that set alphas: {"lora_alpha", "alpha_pattern",
    "use_rslora"}. Refuses adapters that are not plain LoRA (LoHa, LoKr, IA3..., DoRA, LoRA biases)."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise LoraError(f"{path}: cannot read the PEFT adapter config: {e}") from None
    if not isinstance(cfg, dict):
        raise LoraError(f"{path}: a PEFT adapter config must be a JSON object")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise LoraError(f"{path}: a PEFT {cfg['peft_type']} adapter; only LoRA adapters are supported")
    for field, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA biases (lora_bias)")):
        if cfg.get(field):
            raise LoraError(f"{path}: {what} adapters are not supported")
    return {"lora_alpha": cfg.get("lora_alpha", _PEFT_DEFAULT_ALPHA), "alpha_pattern": cfg.get("alpha_pattern") or {},
            "use_rslora": bool(cfg.get("use_rslora"))}


def _peft_components(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PEFT keys `base_model.model.<module>...` -> `text_encoder.<module>...` for a CLIP text model's
    modules (`text_model.encoder.layers.*`; transformers 5: `encoder.layers.*`), else `unet.<module>...`
    (a UNet, or a motion module applied as one; neither has a top-level `encoder`)."""
    out = {}
    for key, value in tensors.items():
        name = key[len(_PEFT_PREFIX):]
        text = name.startswith(("text_model.", "encoder.layers."))
        out[("text_encoder." if text else "unet.") + name] = value
    return out


def check_finite(tensors: Mapping[str, np.ndarray], source: str, allow_nonfinite: bool) -> None:
    """NaN/Inf tensors of a LoRA file named (by the file's keys): a warning if `allow_nonfinite`, else
    an `InputError` (module docstring)."""
    nonfinite = NonFinite(source, allow=allow_nonfinite)
    for key, value in tensors.items():
        nonfinite.check(key, value)
    nonfinite.report()


def read_lora(path, targets: Mapping[str, Mapping], skip_other: bool = False,
              allow_nonfinite: bool = True) -> dict[str, dict[Path, LoraWeights]]:
    """Read a LoRA (.safetensors / .ckpt / .bin; `"state_dict"` and `module.` wrappers removed), or a
    PEFT adapter: its `save_pretrained` folder, or the weights file with `adapter_config.json` beside it.
    Every update is checked against `targets` ({component: params}; leaves may be shapes only, e.g.
    `jax.ShapeDtypeStruct`, so a LoRA can be checked before any weights are loaded): LoraError naming
    the file for a layer the model lacks or a shape it does not have.
    NaN/Inf tensors: warned about by name, or refused unless `allow_nonfinite` (`check_finite`)."""
    name = as_given(os.fspath(path))  # a hub id's snapshot by its id
    weights = lora_weights_file(path)
    with open_state_dict(weights) as sd:
        tensors, metadata = {k: sd[k] for k in sd}, dict(sd.metadata)
    check_finite(tensors, str(weights), allow_nonfinite)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    try:
        return _resolve(tensors, metadata, weights, name, targets, skip_other)
    except LoraError:
        refuse_other_family(tensors, name)  # the reason behind its absent layers or wrong shapes
        raise


def refuse_other_family(tensors: Mapping[str, np.ndarray], source: str) -> None:
    """LoraError (`<source>: an SDXL LoRA (family sdxl); this model is SD1.x`) when the LoRA's keys
    show it is for another family than the SD1.x models here (`convert.detect.lora_family`, as
    `convert inspect` reports it); nothing when they show SD1.x or no family."""
    family = lora_family(tensors, lambda k: np.shape(tensors[k]))
    if family not in (None, "sd1"):
        raise LoraError(f"{source}: an {FAMILY_NAMES[family]} LoRA (family {family}); this model is SD1.x")


def _resolve(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str], weights: str, name: str,
             targets: Mapping[str, Mapping], skip_other: bool) -> dict[str, dict[Path, LoraWeights]]:
    """`read_lora`'s tensors (a PEFT adapter's with its config beside `weights`) normalized and checked
    against `targets`."""
    lora_configs = None
    if tensors and all(k.startswith(_PEFT_PREFIX) for k in tensors):
        config = os.path.join(os.path.dirname(weights), PEFT_CONFIG)
        if not os.path.isfile(config):
            raise LoraError(f"{name}: a PEFT adapter (keys {_PEFT_PREFIX}*) needs the {PEFT_CONFIG} that "
                            f"save_pretrained writes beside it (its lora_alpha sets the scale); not found at {config}")
        cfg = peft_lora_config(config)
        tensors, lora_configs = _peft_components(tensors), {"unet": cfg, "text_encoder": cfg}
    lora = normalize(tensors, targets, source=name, metadata=metadata, lora_configs=lora_configs,
                     skip_other=skip_other)
    for component, updates in lora.items():
        check_fits(targets[component], updates, name)
    return lora


def read_factors(path, alpha: float | None = None, allow_nonfinite: bool = True) -> dict[Path, LoraWeights]:
    """LoRA factors as the project's training code holds them, from a Flax params `.safetensors`
    (written by `animatediff_jax.checkpoint.save_params`) -> `{flax kernel path: LoraWeights}`.

    Layout (`animatediff_jax/training/lora.py`, `miniature/lora.py`): `{"lora": {"dotted.flax.path.kernel":
    {"down": (r, in), "up": (out, r)}}}` — file keys `lora/<dotted path>/down` and `.../up`; the
    `lora/` level and the dots are optional (`<a/b/.../kernel>/down` also reads). `alpha`: the
    factors' alpha (update = alpha / r · up @ down); default the file's metadata `alpha` (or
    `lora_alpha`), else r (scale 1). An optional scalar `<path>/alpha` leaf sets one factor's alpha.
    NaN/Inf factors: as in `read_lora`."""
    with open_state_dict(path) as sd:
        tensors, metadata = {k: sd[k] for k in sd}, dict(sd.metadata)
    check_finite(tensors, str(path), allow_nonfinite)
    found: dict[Path, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        parts = key.split("/")
        if parts[0] == "lora" and len(parts) > 2:
            parts = parts[1:]
        if len(parts) < 2 or parts[-1] not in ("down", "up", "alpha"):
            raise LoraError(f"{path}: {key!r} is not a LoRA factor (expected '[lora/]<kernel path>/down|up'); "
                            "a LoRA factors file holds only down/up (and alpha) leaves")
        target = tuple(parts[0].split(".")) if len(parts) == 2 else tuple(parts[:-1])
        found.setdefault(target, {})[parts[-1]] = value
    if not found:
        raise LoraError(f"{path}: holds no LoRA factors")
    default = alpha if alpha is not None else metadata.get("alpha", metadata.get("lora_alpha"))
    out = {}
    for target, f in found.items():
        name = "/".join(target)
        if "down" not in f or "up" not in f:
            raise LoraError(f"{path}: {name} has {sorted(f)} but needs both 'down' and 'up'")
        down, up = np.asarray(f["down"]), np.asarray(f["up"])
        if target[-1] != "kernel" or down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise LoraError(f"{path}: {name}: expected a kernel's factors down (r, in) and up (out, r), got "
                            f"down {down.shape}, up {up.shape}")
        a = np.asarray(f["alpha"]).item() if "alpha" in f and alpha is None else default
        out[target] = LoraWeights(up, down, parse_scale(down.shape[0] if a is None else a, f"{path}: alpha"))
    return out


# ----------------------------------------------------------------------------- fusing

def _fitted(path: Path, delta: np.ndarray, kernel_shape: tuple[int, ...], source: str, w: LoraWeights) -> np.ndarray:
    """A PyTorch-layout update in the Flax layout of the kernel at `path` (a linear update on a 1x1 conv
    and back allowed); LoraError when its shape is not the kernel's."""
    if delta.ndim == 2 and len(kernel_shape) == 4 and kernel_shape[:2] == (1, 1):
        delta = delta[:, :, None, None]  # linear LoRA on a 1x1 conv (e.g. proj_in trained as Linear)
    elif delta.ndim == 4 and len(kernel_shape) == 2 and delta.shape[2:] == (1, 1):
        delta = delta[:, :, 0, 0]
    delta = torch_tensor_to_flax(path, delta)
    if delta.shape != kernel_shape:
        raise LoraError(f"{source}: {'/'.join(path)} has shape {kernel_shape} but the LoRA "
                        f"update is {delta.shape} (up {w.up.shape}, down {w.down.shape})")
    return delta


def check_fits(params: Mapping, lora: Mapping[Path, LoraWeights], source: str = "LoRA") -> None:
    """LoraError unless every update of `lora` has up and down factors of one rank and a kernel of its
    shape in `params` (arrays, or any leaves with a `.shape`, e.g. `jax.ShapeDtypeStruct`); nothing is
    computed."""
    flat = flatten(params)
    for path, w in lora.items():
        if path not in flat:
            raise LoraError(f"{source}: targets {'/'.join(path)}, which the model does not have")
        if w.up.ndim < 2 or w.up.shape[1] != w.rank:
            raise LoraError(f"{source}: {'/'.join(path)}: up {w.up.shape} and down {w.down.shape} do not share a "
                            "rank (up is (out, r), down is (r, in))")
        shape = (w.up.shape[0],) + tuple(w.down.shape[1:])
        _fitted(path, np.broadcast_to(np.float64(0), shape), tuple(np.shape(flat[path])), source, w)


def fuse(params: Mapping, lora: Mapping[Path, LoraWeights], scale: float = 1.0, *, source: str = "LoRA",
         alpha_rule: str = "kohya") -> dict:
    """Params with W += scale · (alpha / rank) · up @ down ("kohya") or W += scale · up @ down ("original")
    at each LoRA target (module docstring); other leaves shared."""
    scale = parse_scale(scale)
    check_fits(params, lora, source)
    flat = flatten(params)
    for path, w in lora.items():
        kernel = flat[path]
        dtype = np.asarray(kernel).dtype
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow to Inf is named by the NaN/Inf checks
            delta = _fitted(path, w.delta(alpha_rule), tuple(np.shape(kernel)), source, w)
            flat[path] = (np.asarray(kernel, np.float64) + scale * delta).astype(dtype)
    return unflatten(flat)


def apply_lora_files(components: Mapping[str, Mapping], loras: Sequence[tuple[str, float]],
                     skip_other: bool = False, alpha_rule: str = "kohya", allow_nonfinite: bool = True) -> dict[str, dict]:
    """Fuse several LoRA files, each at its scale, into the given networks ({"unet": params, ...}).
    `skip_other`: ignore a file's weights for networks not given (instead of refusing). `alpha_rule`:
    "kohya" or "original" (see `fuse`). `allow_nonfinite`: see `read_lora`."""
    out = dict(components)
    for path, scale in loras:
        scale = parse_scale(scale, f"{path}: LoRA scale")
        for component, lora in read_spatial_lora(path, out, skip_other, allow_nonfinite).items():
            out[component] = fuse(out[component], lora, scale, source=str(path), alpha_rule=alpha_rule)
    return out


def parse_path_scale(arg: str, default: float = 1.0) -> tuple[str, float]:
    """`PATH` or `PATH:SCALE` (command line) -> (path, scale); a non-numeric SCALE is an error."""
    path, scale = split_path_scale(arg)
    return (path, default) if scale is None else (path, parse_scale(scale, f"scale of {path!r}"))


# ----------------------------------------------------------------------------- motion LoRA, v3 adapter

def read_motion_lora(path, motion_params: Mapping, allow_nonfinite: bool = True) -> dict[Path, LoraWeights]:
    """A MotionLoRA (original `processor.*_lora` or diffusers format) read and checked against a motion
    module's params (`read_lora`; leaves may be shapes only). MotionLoRAs are trained on v2 modules and
    cover its mid-block module: a module without one (v1, v3) is refused rather than silently given a
    partial update; a LoRA of the image UNet's layers is named as such."""
    try:
        return read_lora(path, {"unet": motion_params}, allow_nonfinite=allow_nonfinite).get("unet", {})
    except LoraTargetsAbsent as e:
        if not any("motion_modules" in name for name in e.absent):
            raise LoraError(f"{as_given(os.fspath(path))}: a LoRA of the image UNet's layers (e.g. {examples(e.absent, 2)}), not a "
                            "MotionLoRA (which targets motion_modules): apply it as a LoRA (--lora)") from None
        if any("mid_block" in name for name in e.absent) and "motion_modules_0" not in motion_params.get("mid_block", {}):
            raise LoraError(f"{e}. This MotionLoRA was trained for a v2 motion module (which has a "
                            "mid-block module); the given module has none (v1/v3)") from None
        raise


def read_spatial_lora(path, targets: Mapping[str, Mapping], skip_other: bool = False, allow_nonfinite: bool = True
                      ) -> dict[str, dict[Path, LoraWeights]]:
    """A LoRA of the image networks ({"unet": 2D UNet params, "text_encoder": ...}; `read_lora`), a
    MotionLoRA given in its place named as such."""
    try:
        return read_lora(path, targets, skip_other, allow_nonfinite)
    except LoraTargetsAbsent as e:
        if all("motion_modules" in name for name in e.absent):
            raise LoraError(f"{as_given(os.fspath(path))}: a MotionLoRA (it targets motion_modules, e.g. {examples(e.absent, 1)}), "
                            "not a LoRA of the image UNet: apply it as a MotionLoRA (--motion-lora)") from None
        raise


def fuse_motion_loras(motion_params: Mapping, loras: Iterable[tuple[str, float]],
                      allow_nonfinite: bool = True) -> dict:
    """Fuse MotionLoRAs (`read_motion_lora`), each at its alpha. `allow_nonfinite`: see `read_lora`."""
    params = dict(motion_params)
    for path, alpha in loras:
        alpha = parse_scale(alpha, f"{path}: MotionLoRA alpha")
        params = fuse(params, read_motion_lora(path, params, allow_nonfinite), alpha, source=str(path))
    return params


def fuse_domain_adapter(unet_params: Mapping, path, scale: float = 1.0, allow_nonfinite: bool = True) -> dict:
    """Fuse the v3 domain adapter (a LoRA on the spatial attention of the image UNet) at `scale`.
    `allow_nonfinite`: see `read_lora`."""
    scale = parse_scale(scale, f"{path}: domain adapter scale")
    lora = read_lora(path, {"unet": unet_params}, allow_nonfinite=allow_nonfinite).get("unet", {})
    return fuse(unet_params, lora, scale, source=str(path))
