"""Prompt configs of the original AnimateDiff (`configs/prompts/*.yaml`, FORMATS.md §4).

A config is a YAML list of entries (or, in the first release's layout, a mapping name -> entry).
Each entry names the weights (motion module, optional MotionLoRAs, domain adapter, DreamBooth file,
LoRA) and the prompts to sample with them. `load_prompt_config` validates every key and type and
returns plain `PromptEntry` objects; nothing is loaded or compiled here, so a bad file fails fast
with an error naming the file, the entry and the key.

Beyond the original schema, an entry may carry `prompt_map` (the key animatediff-cli-prompt-travel
uses): prompt travel, `{frame: prompt}` (one video whose text embedding moves from key frame to
key frame) or a list of such maps (one video each); these videos follow those of `prompt`, which
may then be left out. Frames are integers (or digit strings, as in prompt-travel's JSON) in [0, L).

Relative paths resolve as the original resolves them: against the current directory (the original
is run from its repository root). Where that file does not exist but one relative to the config's
own folder does, that one is used. `configs/inference/inference-v{1,2,3}.yaml` of the original maps
to this project's `configs/inference/v{1,2,3}.yaml` when the original file is not present, and to
the original's scheduler settings (the same in all three; the network settings are read from the
motion-module file) when neither exists.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from animatediff_jax.errors import UsageError

PROJECT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BUILTIN = "builtin:"


class PromptConfigError(UsageError):
    """A prompt config that cannot be run as written."""


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
    lora_model_path: str | None = None
    lora_alpha: float = 0.8
    inference_config: str | None = None
    W: int | None = None
    H: int | None = None
    L: int | None = None
    raw: dict = field(default_factory=dict)  # the entry as written (for the resolved config)


# key -> (accepted Python types, description for error messages)
_NUM = (int, float)
_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "inference_config": ((str,), "a path"),
    "motion_module": ((str, list), "a path or a list of paths"),
    "motion_module_lora_configs": ((list,), "a list of {path, alpha}"),
    "adapter_lora_path": ((str,), "a path"),
    "adapter_lora_scale": (_NUM, "a number"),
    "domain_lora_scale": (_NUM, "a number"),  # present in the original v3 configs; unused there too
    "dreambooth_path": ((str,), "a path"),
    "lora_model_path": ((str,), "a path"),
    "lora_alpha": (_NUM, "a number"),
    "seed": ((int, list), "an integer or a list of integers"),
    "steps": ((int,), "an integer"),
    "guidance_scale": (_NUM, "a number"),
    "prompt": ((list, str), "a list of prompts"),
    "prompt_map": ((dict, list), "a {frame: prompt} mapping or a list of them"),
    "n_prompt": ((list, str), "a list of negative prompts"),
    "W": ((int,), "an integer"),
    "H": ((int,), "an integer"),
    "L": ((int,), "an integer"),
    "random_seed": ((int, list), "the seeds a run used (recorded by the original and by sample; `seed` decides)"),
    "clip_skip": ((int,), "an integer ≥ 0 (read by sample)"),
    "sample_options": ((dict,), "a mapping of sample flags (written by sample; read by sample)"),
}
# Keys of the original that this project does not implement: refused by name, never ignored.
_UNSUPPORTED = {
    "controlnet_path", "controlnet_config", "controlnet_images", "controlnet_image_indexs",
    "normalize_condition_images",
}


def _err(source: str, entry: str, msg: str) -> PromptConfigError:
    return PromptConfigError(f"{source}: {entry}: {msg}")


def resolve_path(path: str, config_dir: Path | None, *, what: str, source: str, entry: str) -> str:
    """Absolute path of a file named in a config, or a clear error listing where it looked."""
    p = Path(os.path.expanduser(path))
    tried = [p if p.is_absolute() else Path.cwd() / p]
    if not p.is_absolute() and config_dir is not None:
        tried.append(config_dir / p)
    m = re.fullmatch(r"(?:.*/)?inference-(v\d)\.yaml", path)
    if m:
        tried.append(PROJECT_CONFIGS / "inference" / f"{m.group(1)}.yaml")
    for t in tried:
        if t.exists():
            return str(t.resolve())
    if m:  # the original's inference configs all carry the same scheduler settings (built in)
        return f"{BUILTIN}inference-{m.group(1)}"
    raise _err(source, entry, f"{what} {path!r} not found (looked at: {', '.join(map(str, tried))})")


def _check_type(value, key: str, source: str, entry: str):
    types, desc = _SCHEMA[key]
    # bool is an int in Python; a YAML `yes` where a number belongs is a mistake.
    if isinstance(value, bool) or not isinstance(value, types):
        raise _err(source, entry, f"key {key!r} must be {desc}, got {type(value).__name__} {value!r}")


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


def check_prompt_frames(entry: PromptEntry, frames: int, source: str | None = None) -> None:
    """Every prompt-travel frame of an entry lies in [0, frames) (frames: the L the entry samples with)."""
    for p in entry.prompts:
        if isinstance(p, dict) and max(p) >= frames:
            msg = (f"prompt travel frame {max(p)} is outside the video's {frames} frames "
                   f"(L = {frames}: frames 0..{frames - 1})")
            raise _err(source, entry.name, msg) if source else PromptConfigError(f"{entry.name}: {msg}")


def _seeds(value, n: int, source: str, entry: str) -> list[int]:
    seeds = [value] if isinstance(value, int) else value
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or not (s == -1 or 0 <= s < 2**64):
            raise _err(source, entry, f"seed[{i}] must be -1 or an integer in [0, 2**64), got {s!r}")
    if len(seeds) == 1:
        seeds = seeds * n
    if len(seeds) != n:
        raise _err(source, entry, f"{len(seeds)} seeds for {n} prompts (give one seed or one per prompt)")
    return list(seeds)


def parse_entry(raw: Any, name: str, source: str, config_dir: Path | None) -> list[PromptEntry]:
    """Validate one entry; an entry listing several motion modules becomes one entry per module."""
    if not isinstance(raw, dict):
        raise _err(source, name, f"an entry must be a mapping of keys, got {type(raw).__name__}")
    unsupported = sorted(set(raw) & _UNSUPPORTED)
    if unsupported:
        raise _err(source, name, f"keys {unsupported} (SparseCtrl) are not supported by animatediff_jax")
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise _err(source, name, f"unknown keys {unknown}; known keys: {sorted(_SCHEMA)}")
    for key, value in raw.items():
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
    seeds = _seeds(raw.get("seed", -1), len(prompts), source, name)

    def path(key, what):
        v = raw.get(key, "")
        return resolve_path(v, config_dir, what=what, source=source, entry=name) if v else None

    loras = []
    for i, item in enumerate(raw.get("motion_module_lora_configs", []) or []):
        if not isinstance(item, dict) or "path" not in item or set(item) - {"path", "alpha"}:
            raise _err(source, name, f"motion_module_lora_configs[{i}] must be {{path, alpha}}, got {item!r}")
        alpha = item.get("alpha", 1.0)
        if isinstance(alpha, bool) or not isinstance(alpha, _NUM):
            raise _err(source, name, f"motion_module_lora_configs[{i}].alpha must be a number, got {alpha!r}")
        loras.append((resolve_path(item["path"], config_dir, what="MotionLoRA", source=source, entry=name),
                      float(alpha)))
    for key in ("W", "H", "L", "steps"):
        if key in raw and raw[key] <= 0:
            raise _err(source, name, f"{key!r} must be positive, got {raw[key]}")
    for key in ("W", "H"):
        if key in raw and raw[key] % 8:
            raise _err(source, name, f"{key!r} must be a multiple of 8, got {raw[key]}")

    modules = raw.get("motion_module", [None])
    modules = [modules] if isinstance(modules, str) else modules
    for i, m in enumerate(modules):
        if m is not None and not isinstance(m, str):
            raise _err(source, name, f"motion_module[{i}] must be a path, got {m!r}")
    base = PromptEntry(
        name=name, prompts=prompts, n_prompts=n_prompts, seeds=seeds,
        steps=raw.get("steps", 25), guidance_scale=float(raw.get("guidance_scale", 7.5)),
        motion_module_lora_configs=loras,
        adapter_lora_path=path("adapter_lora_path", "domain adapter"),
        adapter_lora_scale=float(raw.get("adapter_lora_scale", 1.0)),
        dreambooth_path=path("dreambooth_path", "DreamBooth checkpoint"),
        lora_model_path=path("lora_model_path", "LoRA"),
        lora_alpha=float(raw.get("lora_alpha", 0.8)),
        inference_config=path("inference_config", "inference config"),
        W=raw.get("W"), H=raw.get("H"), L=raw.get("L"), raw=dict(raw))
    if base.L is not None:
        check_prompt_frames(base, base.L, source)
    out = []
    for i, m in enumerate(modules):
        mm = resolve_path(m, config_dir, what="motion module", source=source, entry=name) if m else None
        sub = f"{name}[motion_module {i}]" if len(modules) > 1 else name
        out.append(dataclasses.replace(base, name=sub, motion_module=mm, raw={**raw, "motion_module": m}))
    return out


def load_prompt_config(path: str | os.PathLike) -> list[PromptEntry]:
    """Read and validate a prompt config file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise PromptConfigError(f"prompt config {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PromptConfigError(f"{path}: not valid YAML: {e}") from None
    if isinstance(data, dict):  # first release: {name: entry}
        items = list(data.items())
    elif isinstance(data, list):
        items = [(f"entry {i}", e) for i, e in enumerate(data)]
    else:
        raise PromptConfigError(f"{path}: expected a list of entries, got {type(data).__name__}")
    if not items:
        raise PromptConfigError(f"{path}: no entries")
    entries = []
    for name, raw in items:
        entries.extend(parse_entry(raw, str(name), str(path), path.parent.resolve()))
    return entries


def draw_seeds(seeds: list[int]) -> list[int]:
    """Replace each -1 by a fresh random seed (recorded in the resolved config)."""
    return [secrets.randbits(63) if s == -1 else s for s in seeds]


def inference_settings(path: str | None) -> dict:
    """`noise_scheduler_kwargs` of an (original-style) inference config, {} when none is given."""
    if path is None:
        return {}
    if path.startswith(BUILTIN):
        from animatediff_jax.samplers import ORIGINAL_SCHEDULER_KWARGS
        return dict(ORIGINAL_SCHEDULER_KWARGS)
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PromptConfigError(f"{path}: an inference config must be a mapping")
    kwargs = data.get("noise_scheduler_kwargs", {}) or {}
    if not isinstance(kwargs, dict):
        raise PromptConfigError(f"{path}: noise_scheduler_kwargs must be a mapping")
    return dict(kwargs)


def resolved_config(entries: list[tuple[PromptEntry, list[int]]]) -> list[dict]:
    """The config as written plus `random_seed`: the seeds actually used (as the original saves it)."""
    return [{**e.raw, "random_seed": list(seeds)} for e, seeds in entries]
