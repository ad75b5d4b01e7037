"""Prompt configs of the original AnimateDiff (`configs/prompts/*.yaml`, FORMATS.md §4), every release.

A config is a YAML list of entries, or a mapping `name: entry` (the layout of the first two releases,
e.g. `ToonYou: {...}`). Each entry names the weights and the prompts to sample with them.
`load_prompt_config` validates every key and type and returns plain `PromptEntry` objects; nothing
is converted or compiled here, so a bad file fails fast with an error naming the config file, the
entry and the key (`PromptConfigError`, a `UsageError`; the config itself or a file it names that is
missing, unreadable, empty or not a list or mapping of entries is an `InputError`).

The releases' schemas, read with the meaning the original's `scripts/animate.py` gives them:

- first release (ToonYou, Lyriel, RcnzCartoon, MajicMix, RealisticVision, Tusun, FilmVelvia, ...):
  `path` is a DreamBooth single file, or a LoRA (a file whose every key contains "lora": the original's
  test, which it applied to `.safetensors` files) that is fused at `lora_alpha` into the DreamBooth
  named by `base`; `""` means none (a LoRA with `base: ""` goes on the `--base` model itself, where the
  original fails). `base` is only read for a LoRA `path`; given for anything else it is refused (the
  original ignores it). A `.ckpt` `path` is what the first release loads strictly as its whole UNet3D
  state dict (image layers and motion modules, `convert/unet3d_checkpoint.py`): `unet_checkpoint`. `motion_module` may be a list: one
  run per module.
- v2: `inference_config`, `motion_module`, `motion_module_lora_configs` ([{path, alpha}]),
  `dreambooth_path`, `lora_model_path`, `lora_alpha` (default 0.8); `""` means none.
- v3: `adapter_lora_path`, `adapter_lora_scale` (default 1.0; `domain_lora_scale`, which some v3
  configs carry, is unused there too), `W`, `H`, `L` per entry. SparseCtrl: `controlnet_path` (the
  encoder file; empty or absent: none, and the other `controlnet_*` keys are not read, as in the
  original), `controlnet_images` (key-image paths), `controlnet_image_indexs` (their frames, default
  [0]; negative counts from the end, -1 = the last frame; the first len(indexs) images are used, at
  least that many must be given), `controlnet_conditioning_scale` (default 1.0),
  `normalize_condition_images` (grey-scale, min-max normalised: the scribble configs) and
  `controlnet_config` (the original's inference yaml of the encoder: its `set_noisy_sample_input_to_zero`
  and motion-module head count are honoured; absent file: the released encoders' settings). Key images
  are read as the original reads them: centre-cropped to the W:H aspect, resized to H x W (bilinear).
- every release: `seed` (an integer in [0, 2**64 - 1], or a list: one broadcasts to all prompts, else
  one per prompt; -1 = draw a random seed), `steps`, `guidance_scale`, `prompt`, `n_prompt` (one broadcasts).
- saved configs (the original's and ours) carry `random_seed`: the seeds the run actually used, one
  per prompt. It takes the place of each `seed` of -1, so re-running a saved config reproduces its
  videos (the original would draw new ones); a `seed` other than -1 wins (an edited config). Delete
  `random_seed` to draw new seeds.

LoRA strength: a LoRA named by a config is fused as the original fuses it, W += lora_alpha · up @ down,
ignoring the per-layer `.alpha` a kohya file carries (`lora_alpha_rule: original`, the default); the
command line's `--lora PATH:SCALE` uses the kohya/A1111 rule W += SCALE · (alpha / rank) · up @ down,
and a config written from flags records `lora_alpha_rule: kohya` (see `convert.lora.fuse`).

Beyond the original schema (the keys this project writes into a run's `config.yaml`):
- `lora_model_path` may be a list of LoRAs (fused in order) with `lora_alpha` one number or one per
  LoRA; `lora_alpha_rule` is "original" or "kohya" (above).
- `motion_scale` (a number, default 1) and `motion_block_scales` ({block: factor}, blocks
  `down_blocks_<i>`, `mid_block`, `up_blocks_<i>`): multipliers on the motion modules' residual
  (ComfyUI's motion scale; `--motion-scale`, `--motion-block-scales` override them); whether the
  blocks exist is checked against the models by `sample` before any model loads.
- `controlnets`: a list of {path, video, conditioning_scale (default 1), control_guidance_start
  (default 0), control_guidance_end (default 1)}: ControlNets, each with its conditioning video (a
  video file or a folder of frames at the output size, one frame per video frame or a single image).
- `prompt_map` (the key animatediff-cli-prompt-travel uses): prompt travel, `{frame: prompt}` (one
  video whose text embedding moves from key frame to key frame) or a list of such maps (one video
  each); these videos follow those of `prompt`, which may then be left out. Frames are integers (or
  digit strings, as in prompt-travel's JSON) in [0, L).

Relative paths resolve as the original resolves them: against the current directory (the original
is run from its repository root). Where that file does not exist but one relative to the config's
own folder does, that one is used. `configs/inference/inference-v{1,2,3}.yaml` of the original maps
to this project's `configs/inference/v{1,2,3}.yaml` when the original file is not present, and to
the original's scheduler settings (the same in all three; the network settings are read from the
motion-module file) when neither exists. A model key (`motion_module`, `dreambooth_path`,
`lora_model_path`, `motion_module_lora_configs`' and `controlnets`' `path`, `adapter_lora_path`,
`controlnet_path`) may also name a hub id (`owner/name`, where no such path exists), found in the
Hugging Face cache as the flags' hub ids are (looked for while the config is read: one that cannot be
had is an error naming the key, where the path was looked for and why the id cannot be had).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.hub_ids import is_hub_id
from animatediff_jax.sampling.inference_config import motion_config_from_inference_yaml
from animatediff_jax.yaml_file import read_yaml, read_yaml_mapping

PROJECT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BUILTIN = "builtin:"
SEED_MAX = 2**64 - 1  # a seed becomes a JAX PRNG key of 64 bits (numpy's SeedSequence would take any)


class PromptConfigError(UsageError):
    """A prompt config that cannot be run as written (a key's value); names the file, entry and key."""


@dataclass
class PromptEntry:
    """One entry of a prompt config, validated; paths absolute, lists broadcast."""
    name: str
    prompts: list  # strings, then {frame: prompt} maps (prompt travel)
    n_prompts: list[str]
    seeds: list[int]  # -1 = draw a random seed at sampling time
    steps: int = 25
    guidance_scale: float = 7.5
    motion_module: str | None = None
    motion_module_lora_configs: list[tuple[str, float]] = field(default_factory=list)
    adapter_lora_path: str | None = None
    adapter_lora_scale: float = 1.0
    dreambooth_path: str | None = None
    unet_checkpoint: str | None = None  # first release: a `.ckpt` `path`, the whole UNet3D (convert/unet3d_checkpoint.py)
    loras: list[tuple[str, float]] = field(default_factory=list)  # (path, lora_alpha), fused in order
    lora_alpha_rule: str = "original"  # "original" | "kohya" (convert.lora.ALPHA_RULES, fuse)
    inference_config: str | None = None
    W: int | None = None
    H: int | None = None
    L: int | None = None
    motion_scale: float = 1.0  # multiplier on the motion modules' residual (pipeline.motion_scaled_params)
    motion_block_scales: dict[str, float] = field(default_factory=dict)  # {block: factor}
    controlnets: list[dict] = field(default_factory=list)  # {path, video, conditioning_scale, control_guidance_*}
    sparsectrl: dict | None = None  # {path, images, keyframes, conditioning_scale, normalize, config}
    raw: dict = field(default_factory=dict)  # the entry as written, its files' paths absolute (`recorded_entry`)


# key -> (accepted Python types, description for error messages)
_NUM = (int, float)
_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "inference_config": ((str,), "a path"),
    "motion_module": ((str, list), "a path or a list of paths"),
    "motion_module_lora_configs": ((list,), "a list of {path, alpha}"),
    "adapter_lora_path": ((str,), "a path"),
    "adapter_lora_scale": (_NUM, "a number"),
    "domain_lora_scale": (_NUM, "a number"),  # present in the original v3 configs; unused there too
    "path": ((str,), "a path"),  # first release: a DreamBooth file or a LoRA
    "base": ((str,), "a path"),  # first release: the DreamBooth a LoRA `path` is fused into
    "dreambooth_path": ((str,), "a path"),
    "lora_model_path": ((str, list), "a path or a list of paths"),
    "lora_alpha": ((int, float, list), "a number or a list of numbers"),
    "lora_alpha_rule": ((str,), "'original' or 'kohya'"),
    "seed": ((int, list), "an integer or a list of integers"),
    "random_seed": ((int, list), "an integer or a list of integers"),
    "clip_skip": ((int,), "an integer ≥ 0 (read by sample)"),
    "motion_scale": (_NUM, "a number"),
    "motion_block_scales": ((dict,), "a {block: factor} mapping, e.g. {mid_block: 1.2}"),
    "controlnets": ((list,), "a list of {path, video, conditioning_scale, control_guidance_start, "
                             "control_guidance_end}"),
    "sample_options": ((dict,), "a mapping of sample flags (written by sample, which reads and checks it)"),
    "steps": ((int,), "an integer"),
    "guidance_scale": (_NUM, "a number"),
    "prompt": ((list, str), "a list of prompts"),
    "prompt_map": ((dict, list), "a {frame: prompt} mapping or a list of them"),
    "n_prompt": ((list, str), "a list of negative prompts"),
    "W": ((int,), "an integer"),
    "H": ((int,), "an integer"),
    "L": ((int,), "an integer"),
}
# SparseCtrl keys of the v3 release: read only when `controlnet_path` names a file (as the original).
_SPARSECTRL = ("controlnet_path", "controlnet_config", "controlnet_images", "controlnet_image_indexs",
               "controlnet_conditioning_scale", "normalize_condition_images")
_CONTROLNET_ITEM = {"path": str, "video": str, "conditioning_scale": _NUM, "control_guidance_start": _NUM,
                    "control_guidance_end": _NUM}


MAX_SIDE = 8192  # pixels (W, H): far beyond any SD1.x model's training size; larger only exhausts memory


def _err(source: str, entry: str, msg: str, cls: type = PromptConfigError) -> Exception:
    return cls(f"{source}: {entry}: {msg}")


def resolve_path(path: str, config_dir: Path | None, *, what: str, source: str, entry: str,
                 hub: str | None = None) -> str:
    """Absolute path of a file named in a config, or an InputError listing where it looked. `hub`
    (model keys: the kind of repo, a `convert.sources.HUB_PATTERNS` key): a hub id ('owner/name') that
    is no such path is kept as given once found in the Hugging Face cache or on the hub (its configs
    downloaded, `convert.sources.resolve_source`; the loaders fetch the weights of the variant they
    read, --variant, and find it there again); one that cannot be had is an
    InputError saying both where it looked and why the id cannot be had."""
    tried = _candidates(path, config_dir)
    # the original's inference configs: the first release's inference.yaml (v1), then inference-v1/v2/v3.yaml
    m = re.fullmatch(r"(?:.*/)?inference(?:-(v[123]))?\.yaml", path)
    version = (m.group(1) or "v1") if m else None
    if m:
        tried.append(PROJECT_CONFIGS / "inference" / f"{version}.yaml")
    for t in tried:
        if t.exists():
            return str(t.resolve())
    # lazy: convert/ imports numpy, huggingface_hub (not --help)
    from convert.sources import HUB_PATTERNS, HubError, resolve_source
    not_found = f"{what} {path!r} not found (looked at: {', '.join(map(str, tried))})"
    if hub and is_hub_id(path):
        try:
            resolve_source(path, allow_patterns=HUB_PATTERNS[hub], weights=False)  # the loaders fetch the weights
        except HubError as e:
            raise _err(source, entry, f"{not_found}, and {e.problem}", InputError) from None
        return path
    if m:  # the original's inference configs all carry the same scheduler settings (built in)
        return f"{BUILTIN}inference-{version}"
    raise _err(source, entry, not_found, InputError)


def _candidates(path: str, config_dir: Path | None) -> list[Path]:
    """Where a config's `path` is looked for, in order: as given (relative to the current directory),
    then relative to the config's own folder (module docstring)."""
    p = Path(os.path.expanduser(path))
    tried = [p if p.is_absolute() else Path.cwd() / p]
    if not p.is_absolute() and config_dir is not None and config_dir / p != tried[0]:  # a config outside the cwd
        tried.append(config_dir / p)
    return tried


# The keys of an entry naming files (a path or a list of paths), and those of its list items.
PATH_KEYS = ("dreambooth_path", "path", "base", "lora_model_path", "adapter_lora_path", "inference_config",
             "motion_module", "controlnet_path", "controlnet_config", "controlnet_images")
ITEM_PATH_KEYS = {"motion_module_lora_configs": ("path",), "controlnets": ("path", "video")}


def recorded_entry(raw: dict, config_dir: Path | None) -> dict:
    """The entry `raw` as a run's config.yaml records it: every file it names as the absolute path it
    was found at (so the record runs from any folder, wherever the config was), values naming no file
    here (hub ids, the original's inference configs mapped to built-in ones) as given."""
    def rec(value):
        if isinstance(value, str) and value:
            return next((str(t.resolve()) for t in _candidates(value, config_dir) if t.exists()), value)
        return [rec(v) for v in value] if isinstance(value, list) else value

    out = {k: rec(v) if k in PATH_KEYS else v for k, v in raw.items()}
    for key, fields in ITEM_PATH_KEYS.items():
        if isinstance(raw.get(key), list):
            out[key] = [{k: rec(v) if k in fields else v for k, v in item.items()} if isinstance(item, dict) else item
                        for item in raw[key]]
    return out


def model_keys(raw: dict) -> dict[str, str]:
    """The key naming each model input of the entry `raw` (by `loading.ModelFiles`' role), as errors
    about its file name it: the later releases' keys, or the first release's `path` / `base`."""
    keys = dict(dreambooth="dreambooth_path", motion_module="motion_module", loras="lora_model_path",
                motion_loras="motion_module_lora_configs", domain_adapter="adapter_lora_path")
    if "path" in raw or "base" in raw:  # first release: `path` a LoRA fused into `base`, or the DreamBooth
        keys.update(dreambooth="base" if "base" in raw else "path", loras="path")
    return keys


def _check_type(value, key: str, source: str, entry: str):
    types, desc = _SCHEMA[key]
    # bool is an int in Python; a YAML `yes` where a number belongs is a mistake.
    if isinstance(value, bool) or not isinstance(value, types):
        raise _err(source, entry, f"key {key!r} must be {desc}, got {type(value).__name__} {value!r}")
    _check_finite(value, f"key {key!r}", source, entry)


def _check_finite(value, where: str, source: str, entry: str):
    """A YAML `.nan` / `.inf` where a number belongs is refused (it would silently give NaN frames)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(source, entry, f"{where} must be a finite number, got {value!r}")


def _str_list(value, key: str, source: str, entry: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise _err(source, entry, f"{key}[{i}] must be a string, got {type(v).__name__} {v!r}")
    return list(items)


def _prompt_map(value, index: int | None, source: str, entry: str) -> dict[int, str]:
    """One `prompt_map` as {frame: prompt}: frames non-negative integers, prompts strings."""
    where = "prompt_map" if index is None else f"prompt_map[{index}]"
    if not isinstance(value, dict):
        raise _err(source, entry, f"{where} must be a {{frame: prompt}} mapping, got {type(value).__name__} {value!r}")
    if not value:
        raise _err(source, entry, f"{where} is empty")
    out: dict[int, str] = {}
    for k, v in value.items():
        if isinstance(k, bool) or not (isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit())):
            raise _err(source, entry, f"{where}: key {k!r} is not a frame number (a non-negative integer)")
        frame = int(k)
        if frame < 0:
            raise _err(source, entry, f"{where}: frame {frame} is negative")
        if frame in out:
            raise _err(source, entry, f"{where}: frame {frame} is given twice")
        if not isinstance(v, str):
            raise _err(source, entry, f"{where}: the prompt for frame {frame} must be a string, "
                                      f"got {type(v).__name__} {v!r}")
        out[frame] = v
    return dict(sorted(out.items()))


def travel_frame_problem(entry: PromptEntry, frames: int) -> str | None:
    """What is wrong with the entry's prompt-travel frames for a video of `frames` frames, or None."""
    last = max((max(p) for p in entry.prompts if isinstance(p, dict)), default=-1)
    return f"prompt travel frame {last} is outside the video's {frames} frames (0..{frames - 1})" \
        if last >= frames else None


def check_prompt_frames(entry: PromptEntry, frames: int, source: str) -> None:
    """Every prompt-travel frame of the entry of prompt config `source` lies in [0, frames) (frames: the
    L the entry samples with); PromptConfigError naming the file and entry otherwise."""
    if (problem := travel_frame_problem(entry, frames)) is not None:
        raise _err(source, entry.name, problem)


def seed_problem(value, allow_random: bool = True) -> str | None:
    """What is wrong with `value` as a seed (`--seed`, `seed`; -1 = draw one, where `allow_random`), or None."""
    integer = isinstance(value, int) and not isinstance(value, bool)
    if integer and (0 <= value <= SEED_MAX or (allow_random and value == -1)):
        return None
    return f"must be {'-1 (random) or ' if allow_random else ''}an integer in [0, {SEED_MAX}], got {value!r}"


def _int_list(value, key: str, source: str, entry: str, allow_random: bool) -> list[int]:
    seeds = [value] if isinstance(value, int) else value
    for i, s in enumerate(seeds):
        if (problem := seed_problem(s, allow_random)) is not None:
            raise _err(source, entry, f"{key}[{i}] {problem}")
    return list(seeds)


def _seeds(raw: dict, n: int, source: str, entry: str) -> list[int]:
    """`seed` as the original reads it (one broadcasts, else one per prompt; -1 = random), with each -1
    replaced by the `random_seed` a saved config records for that prompt."""
    seeds = _int_list(raw.get("seed", -1), "seed", source, entry, allow_random=True)
    if len(seeds) == 1:
        seeds = seeds * n
    if len(seeds) != n:
        raise _err(source, entry, f"{len(seeds)} seeds for {n} prompts (give one seed or one per prompt)")
    if "random_seed" not in raw:
        return seeds
    used = _int_list(raw["random_seed"], "random_seed", source, entry, allow_random=False)
    if len(used) != n:
        raise _err(source, entry, f"random_seed records {len(used)} seeds for {n} prompts (a saved config "
                                  "records one per prompt; delete random_seed to draw new seeds)")
    return [u if s == -1 else s for s, u in zip(seeds, used)]


def _is_lora_file(path: str, source: str, entry: str) -> bool:
    """The first release's test for a `path`: a checkpoint file whose every key contains "lora"."""
    if os.path.isdir(path):
        return False  # a DreamBooth model as a folder
    # lazy: convert.io imports flax (via animatediff_jax.checkpoint); `sample --help` must not pay for it
    from convert.io import CheckpointError, open_state_dict
    try:
        with open_state_dict(path) as sd:
            keys = list(sd)
    except CheckpointError as e:
        raise _err(source, entry, f"key 'path': {e}", InputError) from None
    return bool(keys) and all("lora" in k for k in keys)


def _lora_list(raw: dict, source: str, entry: str, config_dir: Path | None) -> list[tuple[str, float]]:
    """`lora_model_path` (a path, "" for none, or a list) with `lora_alpha` (one number or one per LoRA)."""
    paths = raw.get("lora_model_path", "")
    paths = ([paths] if paths else []) if isinstance(paths, str) else paths
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p:
            raise _err(source, entry, f"lora_model_path[{i}] must be a path, got {p!r}")
    alphas = raw.get("lora_alpha", 0.8)
    alphas = alphas if isinstance(alphas, list) else [alphas]
    for i, a in enumerate(alphas):
        if isinstance(a, bool) or not isinstance(a, _NUM):
            raise _err(source, entry, f"lora_alpha[{i}] must be a number, got {a!r}")
        _check_finite(a, f"lora_alpha[{i}]", source, entry)
    if len(alphas) == 1:
        alphas = alphas * len(paths)
    if paths and len(alphas) != len(paths):
        raise _err(source, entry, f"{len(alphas)} lora_alpha for {len(paths)} LoRAs (give one or one per LoRA)")
    key = "key 'lora_model_path'" if isinstance(raw.get("lora_model_path"), str) else "lora_model_path[{}]"
    return [(resolve_path(p, config_dir, what=f"{key.format(i)}: LoRA", source=source, entry=entry, hub="lora"), float(a))
            for i, (p, a) in enumerate(zip(paths, alphas))]


def _image_layers(raw: dict, source: str, entry: str, config_dir: Path | None
                  ) -> tuple[str | None, list[tuple[str, float]], str | None]:
    """(DreamBooth path or None, [(LoRA path, lora_alpha)], first-release UNet3D `.ckpt` or None) in
    either layout (see module docstring)."""
    def path(key, what, hub=None):
        v = raw.get(key, "")
        return resolve_path(v, config_dir, what=f"key {key!r}: {what}", source=source, entry=entry, hub=hub) if v else None

    if "path" not in raw and "base" not in raw:
        return path("dreambooth_path", "DreamBooth checkpoint", hub="sd"), _lora_list(raw, source, entry, config_dir), None
    mixed = sorted({"dreambooth_path", "lora_model_path"} & set(raw))
    if mixed:
        raise _err(source, entry, f"keys 'path'/'base' (first-release layout) and {mixed} (later releases) "
                                  "cannot be combined: use one layout")
    if "path" not in raw:
        raise _err(source, entry, "key 'base' names the DreamBooth a LoRA 'path' is fused into, but 'path' is missing")
    first = path("path", "DreamBooth checkpoint or LoRA")
    base = path("base", "DreamBooth checkpoint")
    if first is not None and first.endswith(".ckpt") and base is None:  # the original: unet.load_state_dict
        return None, [], first
    if first is not None and not first.endswith(".ckpt") and _is_lora_file(first, source, entry):
        alpha = raw.get("lora_alpha", 0.8)
        if isinstance(alpha, (bool, list)):
            raise _err(source, entry, f"key 'lora_alpha' must be a number, got {alpha!r}")
        return base, [(first, float(alpha))], None
    if base is not None:
        what = "'path' is empty" if first is None else f"'path' {raw['path']!r} is not a LoRA"
        raise _err(source, entry, f"key 'base' is only used when 'path' is a LoRA, and {what} "
                                  "(the original ignores it): remove 'base', or use dreambooth_path")
    return first, [], None


def _sparsectrl(raw: dict, source: str, entry: str, config_dir: Path | None) -> dict | None:
    """The SparseCtrl keys with the original's meaning (module docstring), paths resolved; None
    when `controlnet_path` is empty or absent (the original then reads none of them)."""
    path = raw.get("controlnet_path", "")
    if not path:
        ignored = [k for k in _SPARSECTRL if k in raw and k != "controlnet_path"]
        if ignored:
            warnings.warn(f"{source}: {entry}: {', '.join(ignored)} ignored: no 'controlnet_path' (SparseCtrl "
                          "encoder) is given, so the video is sampled without control, as the original does")
        return None
    if not isinstance(path, str):
        raise _err(source, entry, f"key 'controlnet_path' must be a path, got {path!r}")

    def resolve(p, what, hub=None):
        return resolve_path(p, config_dir, what=what, source=source, entry=entry, hub=hub)
    if "controlnet_images" not in raw:
        raise _err(source, entry, "missing key 'controlnet_images' (the condition images 'controlnet_path' needs)")
    images = raw["controlnet_images"]
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        raise _err(source, entry, f"key 'controlnet_images' must be a non-empty list of image paths, got {images!r}")
    indexes = raw.get("controlnet_image_indexs", [0])
    if not isinstance(indexes, list) or not indexes or any(isinstance(i, bool) or not isinstance(i, int)
                                                           for i in indexes):
        raise _err(source, entry, f"key 'controlnet_image_indexs' must be a non-empty list of frame indices, "
                                  f"got {indexes!r}")
    if len(images) < len(indexes):
        raise _err(source, entry, f"{len(indexes)} controlnet_image_indexs but {len(images)} controlnet_images "
                                  "(the original needs at least one image per index)")
    if len(images) > len(indexes):
        warnings.warn(f"{source}: {entry}: {len(images)} controlnet_images for {len(indexes)} controlnet_image_indexs: "
                      f"the last {len(images) - len(indexes)} are not used (the original reads the first image of "
                      "each index); list a frame index for each image to use them all")
    scale = raw.get("controlnet_conditioning_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, _NUM):
        raise _err(source, entry, f"key 'controlnet_conditioning_scale' must be a number, got {scale!r}")
    _check_finite(scale, "key 'controlnet_conditioning_scale'", source, entry)
    normalize = raw.get("normalize_condition_images", False)
    if not isinstance(normalize, bool):
        raise _err(source, entry, f"key 'normalize_condition_images' must be true or false, got {normalize!r}")
    config = raw.get("controlnet_config", "")
    if config and not isinstance(config, str):
        raise _err(source, entry, f"key 'controlnet_config' must be a path, got {config!r}")
    try:  # the original's configs/inference/sparsectrl/*.yaml, when present
        config = resolve(config, "key 'controlnet_config': SparseCtrl inference config") if config else None
    except InputError:
        config = None
    return dict(path=resolve(path, "key 'controlnet_path': SparseCtrl encoder", hub="model"),
                images=[resolve(i, f"controlnet_images[{n}]: key image") for n, i in enumerate(images[:len(indexes)])],
                keyframes=list(indexes), conditioning_scale=float(scale), normalize=normalize, config=config)


def _controlnets(raw: dict, source: str, entry: str, config_dir: Path | None) -> list[dict]:
    """`controlnets`: [{path, video, conditioning_scale, control_guidance_start, control_guidance_end}]."""
    out = []
    for n, item in enumerate(raw.get("controlnets", [])):
        where = f"controlnets[{n}]"
        if not isinstance(item, dict) or not {"path", "video"} <= set(item) or set(item) - set(_CONTROLNET_ITEM):
            raise _err(source, entry, f"{where} must be {{{', '.join(_CONTROLNET_ITEM)}}} (path and video "
                                      f"required), got {item!r}")
        for key, value in item.items():
            if isinstance(value, bool) or not isinstance(value, _CONTROLNET_ITEM[key]):
                raise _err(source, entry, f"{where}.{key} must be a {'path' if key in ('path', 'video') else 'number'}"
                                          f", got {value!r}")
            _check_finite(value, f"{where}.{key}", source, entry)
        out.append(dict(path=resolve_path(item["path"], config_dir, what=f"{where}.path: ControlNet", source=source,
                                          entry=entry, hub="model"),
                        video=resolve_path(item["video"], config_dir, what=f"{where}.video: control video",
                                           source=source, entry=entry),
                        conditioning_scale=float(item.get("conditioning_scale", 1.0)),
                        control_guidance_start=float(item.get("control_guidance_start", 0.0)),
                        control_guidance_end=float(item.get("control_guidance_end", 1.0))))
    return out


def parse_entry(raw: Any, name: str, source: str, config_dir: Path | None) -> list[PromptEntry]:
    """Validate one entry; an entry listing several motion modules becomes one entry per module."""
    if not isinstance(raw, dict):
        raise _err(source, name, f"an entry must be a mapping of keys, got {type(raw).__name__}")
    known = sorted({*_SCHEMA, *_SPARSECTRL})
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
        close = {k: difflib.get_close_matches(str(k), known, n=1) for k in unknown}
        hints = [f"{k!r}: did you mean {c[0]!r}?" for k, c in close.items() if c]
        raise _err(source, name, f"unknown keys {unknown}{' (' + '; '.join(hints) + ')' if hints else ''}; "
                                 f"known keys: {known}")
    for key, value in raw.items():
        if key in _SCHEMA:
            _check_type(value, key, source, name)
    if "prompt" not in raw and "prompt_map" not in raw:
        raise _err(source, name, "missing key 'prompt' (or 'prompt_map')")
    prompts: list = _str_list(raw.get("prompt", []), "prompt", source, name)
    maps = raw.get("prompt_map", [])
    if isinstance(maps, dict):
        prompts.append(_prompt_map(maps, None, source, name))
    else:
        prompts.extend(_prompt_map(m, i, source, name) for i, m in enumerate(maps))
    if not prompts:
        raise _err(source, name, "no prompts ('prompt' and 'prompt_map' are empty)")
    n_prompts = _str_list(raw.get("n_prompt", [""]), "n_prompt", source, name) or [""]
    if len(n_prompts) == 1:
        n_prompts = n_prompts * len(prompts)
    if len(n_prompts) != len(prompts):
        raise _err(source, name, f"{len(n_prompts)} n_prompt for {len(prompts)} prompts "
                                 "(give one to broadcast or one per prompt)")
    seeds = _seeds(raw, len(prompts), source, name)
    rule = raw.get("lora_alpha_rule", "original")
    from convert.lora import ALPHA_RULES  # lazy: convert.lora imports flax; `sample --help` must not pay for it
    if rule not in ALPHA_RULES:
        raise _err(source, name, f"key 'lora_alpha_rule' must be one of {list(ALPHA_RULES)}, got {rule!r}")

    def path(key, what, hub=None):
        v = raw.get(key, "")
        return resolve_path(v, config_dir, what=f"key {key!r}: {what}", source=source, entry=name, hub=hub) if v else None

    loras = []
    for i, item in enumerate(raw.get("motion_module_lora_configs", []) or []):
        if not isinstance(item, dict) or "path" not in item or set(item) - {"path", "alpha"}:
            raise _err(source, name, f"motion_module_lora_configs[{i}] must be {{path, alpha}}, got {item!r}")
        alpha = item.get("alpha", 1.0)
        if isinstance(alpha, bool) or not isinstance(alpha, _NUM):
            raise _err(source, name, f"motion_module_lora_configs[{i}].alpha must be a number, got {alpha!r}")
        _check_finite(alpha, f"motion_module_lora_configs[{i}].alpha", source, name)
        loras.append((resolve_path(item["path"], config_dir, what=f"motion_module_lora_configs[{i}].path: MotionLoRA",
                                   source=source, entry=name, hub="lora"),
                      float(alpha)))
    for key in ("W", "H", "L", "steps"):
        if key in raw and raw[key] <= 0:
            raise _err(source, name, f"{key!r} must be positive, got {raw[key]}")
    for key in ("W", "H"):
        if key in raw and raw[key] % 8:
            raise _err(source, name, f"{key!r} must be a multiple of 8, got {raw[key]}")
        if key in raw and raw[key] > MAX_SIDE:
            raise _err(source, name, f"{key!r} must be ≤ {MAX_SIDE}, got {raw[key]}")

    modules = raw.get("motion_module", [None])  # no key: frames sampled one by one (a frame-wise run's record)
    modules = [modules] if isinstance(modules, str) else modules
    if not modules:
        raise _err(source, name, "key 'motion_module' is an empty list (no video would be sampled); give a path, "
                                 "a list of paths, or leave the key out to sample frame by frame")
    keys = ["key 'motion_module'"] if len(modules) == 1 else [f"motion_module[{i}]" for i in range(len(modules))]
    for key, m in zip(keys, modules):
        if m is not None and not isinstance(m, str):
            raise _err(source, name, f"{key} must be a path, got {m!r}")
        if m is not None and not m.strip():
            raise _err(source, name, f"{key} is an empty path; give a motion module, or leave the key out to "
                                     "sample frame by frame")
    block_scales = raw.get("motion_block_scales", {})
    for block, factor in block_scales.items():
        if not isinstance(block, str) or isinstance(factor, bool) or not isinstance(factor, _NUM):
            raise _err(source, name, f"motion_block_scales: {block!r}: {factor!r} must be a block name "
                                     "and a number, e.g. {mid_block: 1.2}")
        _check_finite(factor, f"motion_block_scales.{block}", source, name)
    dreambooth, image_loras, unet_checkpoint = _image_layers(raw, source, name, config_dir)
    base = PromptEntry(
        name=name, prompts=prompts, n_prompts=n_prompts, seeds=seeds,
        steps=raw.get("steps", 25), guidance_scale=float(raw.get("guidance_scale", 7.5)),
        motion_module_lora_configs=loras,
        adapter_lora_path=path("adapter_lora_path", "domain adapter", hub="lora"),
        adapter_lora_scale=float(raw.get("adapter_lora_scale", 1.0)),
        dreambooth_path=dreambooth, unet_checkpoint=unet_checkpoint, loras=image_loras, lora_alpha_rule=rule,
        inference_config=path("inference_config", "inference config"),
        W=raw.get("W"), H=raw.get("H"), L=raw.get("L"), motion_scale=float(raw.get("motion_scale", 1.0)),
        motion_block_scales={b: float(f) for b, f in block_scales.items()},
        controlnets=_controlnets(raw, source, name, config_dir), sparsectrl=_sparsectrl(raw, source, name, config_dir),
        raw=recorded_entry(raw, config_dir))
    out = []
    recorded_modules = recorded_entry({"motion_module": modules}, config_dir)["motion_module"]
    for i, (key, m, recorded) in enumerate(zip(keys, modules, recorded_modules)):
        mm = resolve_path(m, config_dir, what=f"{key}: motion module", source=source, entry=name, hub="model") if m else None
        sub = f"{name}[motion_module {i}]" if len(modules) > 1 else name
        out.append(dataclasses.replace(base, name=sub, motion_module=mm, raw={**base.raw, "motion_module": recorded}))
    return out


def load_prompt_config(path: str | os.PathLike) -> list[PromptEntry]:
    """Read and validate a prompt config file (see module docstring)."""
    path = Path(path)
    data = read_yaml(path, "prompt config")
    if isinstance(data, dict):  # first and v2 releases: {name: entry}
        settings = [k for k, v in data.items() if (k in _SCHEMA or k in _SPARSECTRL) and not isinstance(v, dict)]
        if settings:
            raise PromptConfigError(
                f"{path}: the top level holds an entry's keys ({', '.join(map(str, settings))}), not entries: "
                "indent them under an entry name (`MyVideo:`) or start them with `- ` (a list of entries)")
        items = list(data.items())
    elif isinstance(data, list):
        items = [(f"entry {i}", e) for i, e in enumerate(data)]
    else:
        raise InputError(f"{path}: prompt config must be a YAML list or mapping of entries, got a {type(data).__name__}")
    if not items:
        raise InputError(f"{path}: prompt config has no entries")
    entries = []
    for name, raw in items:
        entries.extend(parse_entry(raw, str(name), str(path), path.parent.resolve()))
    return entries


def draw_seeds(seeds: list[int]) -> list[int]:
    """Replace each -1 by a fresh random seed (recorded in the resolved config)."""
    return [secrets.randbits(63) if s == -1 else s for s in seeds]


def inference_config(path: str | None) -> tuple[dict, dict]:
    """What an entry's inference config (original schema) says: (motion-module settings, noise_scheduler_kwargs).

    Motion settings {version, max_seq_length}, for `loading.load_motion` (empty when the file has no
    motion module, or none is given): version "v1" without `use_inflated_groupnorm` (the original's
    default: joint resnet GroupNorm), else "v2" with `motion_module_mid_block`, else "v3";
    max_seq_length is `temporal_position_encoding_max_len` where the file states it (None otherwise).
    Unsupported settings are refused naming the file (`models.configs.motion_config_from_inference_yaml`).
    `builtin:` (the original's file, absent here) gives the original's scheduler settings."""
    from animatediff_jax.sampling.samplers import ORIGINAL_SCHEDULER_KWARGS  # noqa: PLC0415 - imports jax
    if path is None:
        return {}, {}
    if path.startswith(BUILTIN):
        return {}, dict(ORIGINAL_SCHEDULER_KWARGS)
    data = read_yaml_mapping(path, "inference config")
    try:
        motion, scheduler = motion_config_from_inference_yaml(data)
    except ValueError as e:  # its refusal of a setting, worded for a dict: name the file instead
        raise PromptConfigError(f"{path}: {str(e).removeprefix('<dict>: ')}") from None
    if motion is None:
        return {}, scheduler
    version = "v1" if motion.resnet_norm == "joint" else ("v2" if motion.use_mid_block else "v3")
    stated = ((data.get("unet_additional_kwargs") or {}).get("motion_module_kwargs") or {}).get(
        "temporal_position_encoding_max_len")
    return dict(version=version, max_seq_length=stated), scheduler


def resolved_config(entries: list[tuple[PromptEntry, list[int]]]) -> list[dict]:
    """The config as written plus `random_seed`: the seeds actually used (as the original saves it)."""
    return [{**e.raw, "random_seed": list(seeds)} for e, seeds in entries]
