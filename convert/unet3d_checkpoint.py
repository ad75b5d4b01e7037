"""The first release's `.ckpt` `path`: a whole UNet3D state dict (image UNet + motion modules).

The original's first `scripts/animate.py` (guoyww/AnimateDiff, July 2023) loads a prompt-config
entry's `path` ending in `.ckpt` as

    state_dict = torch.load(model_config.path)
    pipeline.unet.load_state_dict(state_dict)          # strict

after the motion module: a state dict of its `UNet3DConditionModel` in its own module names —
diffusers-named image layers (`down_blocks.0.attentions.0.proj_in.weight`, ...) and original-named
motion modules (`down_blocks.0.motion_modules.0.temporal_transformer...`, position encodings
`pos_encoder.pe` included, a persistent buffer then) — replacing the whole UNet, motion modules
included. `read_unet3d_checkpoint` reads it as strictly: every key of that UNet3D (the base's
UNet layout with the entry's motion-module layout), nothing else, same shapes; the LDM single file
a user may have meant (`model.diffusion_model.*`) is refused saying what it is.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from animatediff_jax.errors import InputError
from animatediff_jax.params import flatten, flax_path_to_torch, insert_motion, is_motion_path
from convert.export import motion_to_original
from convert.io import examples, open_state_dict
from convert.motion import MotionModule, motion_from_state_dict
from convert.naming import flax_tensor_to_torch, state_dict_to_flax

_OTHER_KINDS = (  # (key prefix, what the file is instead)
    ("model.diffusion_model.", "an LDM single-file checkpoint (model.diffusion_model.* keys: a DreamBooth / SD "
                               "model as A1111 and civitai share it)"),
    ("first_stage_model.", "an LDM single-file checkpoint (first_stage_model.* keys)"),
)


class UNet3DCheckpointError(InputError):
    """A first-release `.ckpt` path that is not the UNet3D state dict the original loads strictly."""


def expected_shapes(unet2d: Mapping, motion: MotionModule) -> dict[str, tuple[int, ...]]:
    """{PyTorch key: shape} of the original's UNet3D state dict for this image UNet (Flax params; its
    motion leaves, if any, ignored) and motion module (original names, `pos_encoder.pe` included)."""
    out = {}
    for path, leaf in flatten(unet2d).items():
        if not is_motion_path(path):  # the torch layout of the shape, from a zero-byte stand-in
            stand_in = np.broadcast_to(np.zeros((), np.float32), np.shape(leaf))
            out[flax_path_to_torch(path)] = tuple(flax_tensor_to_torch(path, stand_in).shape)
    out.update({k: tuple(v.shape) for k, v in motion_to_original(motion.params, motion.config).items()})
    return out


def read_unet3d_checkpoint(path: str, unet2d: Mapping, motion: MotionModule) -> dict:
    """Flax UNet params (image layers + motion modules) of a first-release `.ckpt` `path`, checked
    against the UNet3D that `unet2d` (the base's Flax UNet params) and `motion` (the entry's motion
    module: its layout, heads, groups and version) make, as strictly as torch's `load_state_dict`.
    Raises `UNet3DCheckpointError` naming the file: another kind of file, or missing / unexpected keys
    or other shapes (a few named)."""
    want = expected_shapes(unet2d, motion)
    with open_state_dict(path) as sd:
        keys = list(sd)
        _refuse_other_kinds(path, keys)
        got = {k: tuple(sd.shape(k)) for k in keys}
        missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        resized = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        if missing or unexpected or resized:
            motion_only = not any(".motion_modules." not in k for k in keys)
            problems = [f"{len(missing)} missing keys, e.g. {examples(missing, 3)}" if missing else "",
                        f"{len(unexpected)} unexpected keys, e.g. {examples(unexpected, 3)}" if unexpected else "",
                        f"{len(resized)} of other shapes, e.g. {resized[0]!r} {got[resized[0]]} (expected "
                        f"{want[resized[0]]})" if resized else ""]
            raise UNet3DCheckpointError(
                f"{path}: " + ("a motion module alone (give it as motion_module), " if motion_only else "")
                + "not the UNet3D state dict of this entry's base and motion module, as the original loads a "
                "first-release `.ckpt` path strictly: " + "; ".join(p for p in problems if p))
        image = state_dict_to_flax({k: np.asarray(sd[k]) for k in keys if ".motion_modules." not in k})
        mm = motion_from_state_dict({k: np.asarray(sd[k]) for k in keys if ".motion_modules." in k}, source=path,
                                    heads=motion.config.num_attention_heads,
                                    norm_num_groups=motion.config.norm_num_groups, version=motion.version,
                                    max_seq_length=motion.config.max_seq_length,
                                    replace_pe=True)  # a stored encoding off the sinusoid: warned, as no flag reaches here
    return insert_motion(image, mm.params, strict=False)


def check_kind(path: str) -> None:
    """The cheap part of `read_unet3d_checkpoint`, from key names only (for a CLI's validation before
    any model loads): refuses an LDM single file, saying what it is."""
    with open_state_dict(path) as sd:
        _refuse_other_kinds(path, list(sd))


def _refuse_other_kinds(path: str, keys: list[str]) -> None:
    for prefix, what in _OTHER_KINDS:
        if any(k.startswith(prefix) for k in keys):
            raise UNet3DCheckpointError(
                f"{path}: {what}, not the UNet3D state dict a first-release `.ckpt` path is (the original loads "
                "it with unet.load_state_dict); name it as the entry's dreambooth_path instead")
