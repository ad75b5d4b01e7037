"""LDM ("CompVis") single-file naming <-> diffusers naming for the SD1.x UNet, VAE and CLIP text encoder.

A single file holds all three networks under prefixes (`model.diffusion_model.`, `first_stage_model.`,
`cond_stage_model.transformer.`), EMA copies under `model_ema.`, and the noise schedule as buffers.
Every function here maps one key (and, for the VAE attention, one tensor), so a converter can stream.
The rules are those of FORMATS.md §1 (diffusers' `single_file_utils.py` is the reference).

Also here: diffusers folders written by older diffusers, whose VAE mid-block attention is named
`query/key/value/proj_attn` (`vae_key_from_old_diffusers`, the rename diffusers' own
`ModelMixin._fix_state_dict_keys_on_load` applies when loading such a folder).

Text-encoder keys keep the `text_model.` prefix that SD checkpoints and transformers 4 use (and our
Flax `CLIPTextModel` params, `text_model/...`); transformers 5 state dicts without it are accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
EMA_PREFIX = "model_ema."
PREFIXES = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_PREFIX}

# Noise-schedule buffers, EMA bookkeeping and the VAE training loss: present in LDM files, not networks
# (`convert base` drops them; `convert merge` carries them from one input, unmerged, and lets inputs differ in them).
IGNORED = re.compile(
    r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|"
    r"posterior_variance|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|"
    r"model_ema\.decay|model_ema\.num_updates|first_stage_model\.loss\..*|"
    r"cond_stage_model\.transformer\.(text_model\.)?embeddings\.position_ids)$")

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2", "out_layers.3": "conv2",
           "emb_layers.1": "time_emb_proj", "skip_connection": "conv_shortcut"}
_RESNET_INV = {v: k for k, v in _RESNET.items()}
_UNET_FIXED = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
               "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
_UNET_FIXED_INV = {v: k for k, v in _UNET_FIXED.items()}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_VAE_ATTN_INV = {v: k for k, v in _VAE_ATTN.items()}
# older diffusers' VAE AttentionBlock (Linear layers, same shapes) -> Attention; group_norm keeps its name
_OLD_DIFFUSERS_VAE_ATTN = re.compile(
    r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_OLD_DIFFUSERS_ATTN_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class UnknownKey(KeyError):
    """A key that the LDM rules do not cover."""


def _resnet(rest: str, key: str) -> str:
    for old, new in _RESNET.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise UnknownKey(key)


def _resnet_inv(rest: str, key: str) -> str:
    for new, old in _RESNET_INV.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise UnknownKey(key)


# ----------------------------------------------------------------------------- UNet

def unet_key_to_diffusers(key: str, layers_per_block: int) -> str:
    """LDM UNet key (prefix removed) -> diffusers `UNet2DConditionModel` key."""
    for old, new in _UNET_FIXED.items():
        if key.startswith(old + ".") and key.count(".") == old.count(".") + 1:
            return new + key[len(old):]
    m = re.match(r"^middle_block\.(\d+)\.(.*)$", key)
    if m:
        s, rest = int(m.group(1)), m.group(2)
        if s in (0, 2):
            return f"mid_block.resnets.{s // 2}.{_resnet(rest, key)}"
        if s == 1:
            return f"mid_block.attentions.0.{rest}"
        raise UnknownKey(key)
    m = re.match(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.*)$", key)
    if not m:
        raise UnknownKey(key)
    section, i, s, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    per = layers_per_block + 1
    if section == "input_blocks" and i >= 1:
        block, layer = (i - 1) // per, (i - 1) % per
        if s == 0 and rest.startswith("op."):
            return f"down_blocks.{block}.downsamplers.0.conv.{rest[3:]}"
        if s == 0:
            return f"down_blocks.{block}.resnets.{layer}.{_resnet(rest, key)}"
        if s == 1:
            return f"down_blocks.{block}.attentions.{layer}.{rest}"
    if section == "output_blocks":
        block, layer = i // per, i % per
        if s in (1, 2) and rest.startswith("conv."):
            return f"up_blocks.{block}.upsamplers.0.conv.{rest[5:]}"
        if s == 0:
            return f"up_blocks.{block}.resnets.{layer}.{_resnet(rest, key)}"
        if s == 1:
            return f"up_blocks.{block}.attentions.{layer}.{rest}"
    raise UnknownKey(key)


def unet_key_to_ldm(key: str, layers_per_block: int, up_block_has_attention: Sequence[bool]) -> str:
    """diffusers UNet key -> LDM UNet key (prefix not added). Inverse of `unet_key_to_diffusers`."""
    for new, old in _UNET_FIXED_INV.items():
        if key.startswith(new + ".") and key.count(".") == new.count(".") + 1:
            return old + key[len(new):]
    per = layers_per_block + 1
    m = re.match(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)$", key)
    if m:
        kind, block, sub, layer, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if kind == "down_blocks":
            if sub == "downsamplers" and rest.startswith("conv."):
                return f"input_blocks.{1 + block * per + layers_per_block}.0.op.{rest[5:]}"
            i = 1 + block * per + layer
            if sub == "resnets":
                return f"input_blocks.{i}.0.{_resnet_inv(rest, key)}"
            if sub == "attentions":
                return f"input_blocks.{i}.1.{rest}"
        else:
            if sub == "upsamplers" and rest.startswith("conv."):
                s = 2 if up_block_has_attention[block] else 1
                return f"output_blocks.{block * per + layers_per_block}.{s}.{rest}"
            i = block * per + layer
            if sub == "resnets":
                return f"output_blocks.{i}.0.{_resnet_inv(rest, key)}"
            if sub == "attentions":
                return f"output_blocks.{i}.1.{rest}"
    m = re.match(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key)
    if m:
        if m.group(1) == "resnets":
            return f"middle_block.{2 * int(m.group(2))}.{_resnet_inv(m.group(3), key)}"
        return f"middle_block.1.{m.group(3)}"
    raise UnknownKey(key)


def unet_layers_per_block(keys: Iterable[str]) -> int:
    """layers_per_block of an LDM UNet from its key names (prefix removed)."""
    keys = list(keys)
    outputs = {int(k.split(".")[1]) for k in keys if k.startswith("output_blocks.")}
    downsamplers = {k.split(".")[1] for k in keys if re.match(r"^input_blocks\.\d+\.0\.op\.", k)}
    if not outputs:
        raise UnknownKey("no output_blocks.* keys: not an LDM UNet")
    blocks = len(downsamplers) + 1
    per, remainder = divmod(len(outputs), blocks)
    if remainder or per < 2:
        raise ValueError(f"inconsistent LDM UNet: {len(outputs)} output blocks for {blocks} resolution levels")
    return per - 1


# ----------------------------------------------------------------------------- VAE

def _vae_split(key: str) -> tuple[str, str] | None:
    """(encoder|decoder, rest) of a VAE key in either layout; None for the keys both layouts name
    alike (quant_conv, post_quant_conv, conv_in, conv_out); UnknownKey for anything else."""
    m = re.match(r"^(encoder|decoder)\.(.*)$", key)
    if not m:
        if re.match(r"^(post_)?quant_conv\.(weight|bias)$", key):
            return None
        raise UnknownKey(key)
    return None if re.match(r"^conv_(in|out)\.(weight|bias)$", m.group(2)) else (m.group(1), m.group(2))


def vae_key_to_diffusers(key: str, num_up_blocks: int) -> str:
    """LDM VAE key (prefix removed) -> diffusers `AutoencoderKL` key."""
    split = _vae_split(key)
    if split is None:
        return key
    part, rest = split
    if re.match(r"^norm_out\.(weight|bias)$", rest):
        return f"{part}.conv_norm_out.{rest.split('.')[-1]}"
    m = re.match(r"^(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.(.*)$", rest)
    if m:
        direction, i, what, j, tail = m.groups()
        block = int(i) if direction == "down" else num_up_blocks - 1 - int(i)
        name = f"{part}.{direction}_blocks.{block}"
        if j is not None:
            return f"{name}.resnets.{j}.{tail.replace('nin_shortcut', 'conv_shortcut')}"
        if what == ("downsample" if direction == "down" else "upsample") and tail.startswith("conv."):
            return f"{name}.{what}rs.0.{tail}"
    m = re.match(r"^mid\.block_([12])\.(.*)$", rest)
    if m:
        return f"{part}.mid_block.resnets.{int(m.group(1)) - 1}.{m.group(2).replace('nin_shortcut', 'conv_shortcut')}"
    m = re.match(r"^mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", rest)
    if m:
        return f"{part}.mid_block.attentions.0.{_VAE_ATTN[m.group(1)]}.{m.group(2)}"
    raise UnknownKey(key)


def vae_key_to_ldm(key: str, num_up_blocks: int) -> str:
    """diffusers VAE key -> LDM VAE key (prefix not added). Inverse of `vae_key_to_diffusers`."""
    split = _vae_split(key)
    if split is None:
        return key
    part, rest = split
    if re.match(r"^conv_norm_out\.(weight|bias)$", rest):
        return f"{part}.norm_out.{rest.split('.')[-1]}"
    m = re.match(r"^(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.(.*)$", rest)
    if m:
        direction, b, what, j, tail = m.groups()
        i = int(b) if direction == "down" else num_up_blocks - 1 - int(b)
        if j is not None:
            return f"{part}.{direction}.{i}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{part}.{direction}.{i}.{direction}sample.{tail}"
    m = re.match(r"^mid_block\.resnets\.([01])\.(.*)$", rest)
    if m:
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{m.group(2).replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"^mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", rest)
    if m:
        return f"{part}.mid.attn_1.{_VAE_ATTN_INV[m.group(1)]}.{m.group(2)}"
    raise UnknownKey(key)


def vae_tensor_to_diffusers(diffusers_key: str, array: np.ndarray) -> np.ndarray:
    """LDM stores the VAE mid-block attention projections as 1x1 convs; diffusers as Linear."""
    if _is_vae_attn_proj(diffusers_key) and array.ndim in (3, 4):
        return array.reshape(array.shape[:2])
    return array


def vae_tensor_to_ldm(diffusers_key: str, array: np.ndarray) -> np.ndarray:
    if _is_vae_attn_proj(diffusers_key) and array.ndim == 2:
        return array.reshape(array.shape + (1, 1))
    return array


def vae_shape_to_diffusers(diffusers_key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[:2]) if _is_vae_attn_proj(diffusers_key) and len(shape) in (3, 4) else tuple(shape)


def _is_vae_attn_proj(diffusers_key: str) -> bool:
    return bool(re.search(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key))


def vae_key_from_old_diffusers(key: str) -> str:
    """A diffusers `AutoencoderKL` key as older diffusers saved it -> the current name:
    `{encoder,decoder}.mid_block.attentions.N.{query,key,value,proj_attn}` -> `to_q/to_k/to_v/to_out.0`
    (their Linear weights keep their shapes); any other key is returned unchanged."""
    m = _OLD_DIFFUSERS_VAE_ATTN.match(key)
    return f"{m.group(1)}.{_OLD_DIFFUSERS_ATTN_NAMES[m.group(2)]}.{m.group(3)}" if m else key


def vae_num_up_blocks(keys: Iterable[str]) -> int:
    ups = {k.split(".")[2] for k in keys if k.startswith("decoder.up.")}
    if not ups:
        raise UnknownKey("no decoder.up.* keys: not an LDM VAE")
    return len(ups)


# ----------------------------------------------------------------------------- CLIP text

def text_key_to_diffusers(key: str) -> str:
    """LDM text key (prefix removed) or transformers key -> `text_model.`-prefixed `CLIPTextModel` key."""
    return key if key.startswith("text_model.") else "text_model." + key


text_key_to_ldm = text_key_to_diffusers


# ----------------------------------------------------------------------------- whole files

@dataclass(frozen=True)
class Source:
    """Where one diffusers tensor comes from in an LDM file, and how it is reshaped."""
    key: str  # the LDM key to read
    transform: Callable[[np.ndarray], np.ndarray]
    shape: tuple[int, ...]  # the diffusers shape


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def ema_key(ldm_unet_key: str) -> str:
    """EMA copy of a UNet key: `model.diffusion_model.a.0.b` -> `model_ema.diffusion_modela0b`."""
    return EMA_PREFIX + "".join(ldm_unet_key[len("model."):].split("."))


def has_ema(keys: Iterable[str]) -> bool:
    return sum(k.startswith(EMA_PREFIX) for k in keys) > 100 or any(
        k.startswith(EMA_PREFIX + "diffusion_model") for k in keys)


def plan_ldm(keys: Sequence[str], shape: Callable[[str], tuple[int, ...]], ema: bool = False
             ) -> tuple[dict[str, dict[str, Source]], list[str]]:
    """Map every key of an LDM single file: ({network: {diffusers key: Source}}, unexpected keys).

    Networks absent from the file are absent from the result. With `ema`, UNet tensors are read
    from their `model_ema.` copies (which must exist). Keys that are neither a network tensor nor a
    known non-network buffer are returned as unexpected.
    """
    keys = list(keys)
    keyset = set(keys)
    by_net: dict[str, list[str]] = {n: [] for n in PREFIXES}
    unexpected = []
    for k in keys:
        net = next((n for n, p in PREFIXES.items() if k.startswith(p)), None)
        if net is not None and not IGNORED.match(k):
            by_net[net].append(k[len(PREFIXES[net]):])
        elif net is None and not IGNORED.match(k) and not k.startswith(EMA_PREFIX):
            unexpected.append(k)
    plan: dict[str, dict[str, Source]] = {}
    if by_net["unet"]:
        lpb = unet_layers_per_block(by_net["unet"])
        plan["unet"] = {}
        for k in by_net["unet"]:
            try:
                d = unet_key_to_diffusers(k, lpb)
            except UnknownKey:
                unexpected.append(UNET_PREFIX + k)
                continue
            src = UNET_PREFIX + k
            if ema:
                src = ema_key(src)
                if src not in keyset:
                    raise KeyError(f"EMA weights requested but {src!r} (EMA copy of {UNET_PREFIX + k!r}) is missing")
            plan["unet"][d] = Source(src, _identity, tuple(shape(src)))
    if by_net["vae"]:
        n_up = vae_num_up_blocks(by_net["vae"])
        plan["vae"] = {}
        for k in by_net["vae"]:
            try:
                d = vae_key_to_diffusers(k, n_up)
            except UnknownKey:
                unexpected.append(VAE_PREFIX + k)
                continue
            src = VAE_PREFIX + k
            transform = (lambda a, d=d: vae_tensor_to_diffusers(d, a)) if _is_vae_attn_proj(d) else _identity
            plan["vae"][d] = Source(src, transform, vae_shape_to_diffusers(d, shape(src)))
    if by_net["text_encoder"]:
        plan["text_encoder"] = {text_key_to_diffusers(k): Source(TEXT_PREFIX + k, _identity, tuple(shape(TEXT_PREFIX + k)))
                                for k in by_net["text_encoder"]}
    if ema and plan.get("unet") is not None and not has_ema(keys):
        raise KeyError("EMA weights requested but the file has no model_ema.* tensors")
    return plan, unexpected


def diffusers_to_ldm(unet: Mapping[str, np.ndarray] | None = None, vae: Mapping[str, np.ndarray] | None = None,
                     text_encoder: Mapping[str, np.ndarray] | None = None, *, layers_per_block: int = 2,
                     up_block_has_attention: Sequence[bool] = (False, True, True, True),
                     vae_num_up_blocks: int = 4) -> dict[str, np.ndarray]:
    """diffusers/transformers state dicts -> one LDM single-file state dict (the inverse mapping)."""
    out: dict[str, np.ndarray] = {}
    for k, v in (unet or {}).items():
        out[UNET_PREFIX + unet_key_to_ldm(k, layers_per_block, up_block_has_attention)] = v
    for k, v in (vae or {}).items():
        out[VAE_PREFIX + vae_key_to_ldm(k, vae_num_up_blocks)] = vae_tensor_to_ldm(k, v)
    for k, v in (text_encoder or {}).items():
        out[TEXT_PREFIX + text_key_to_ldm(k)] = v
    return out
