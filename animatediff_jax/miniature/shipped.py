"""The shipped miniature AnimateDiff: where its files are, and what `python -m animatediff_jax.sample`
samples when no weights are given.

The one place that decides both. The miniature AnimateDiff (`animatediff_jax/miniature/`, weights
shipped in `animatediff_jax/assets/miniature/`, rebuilt from scratch by `python -m
animatediff_jax.miniature.build`) is a 32x32, 16-frame AnimateDiff trained on a procedural world of
coloured shapes moving in captioned directions: a base text-to-image model, a DreamBooth fine-tune
("sks", striped backgrounds) and a LoRA ("xyz", checkered backgrounds) trained on single frames only, and a
motion module trained on the world's videos against the frozen base. `default_jobs` lists what the
bare command samples (the base and the DreamBooth model, both with the motion module); every job is
an ordinary `loading.load_pipeline` of those files. Measured quality: RESULTS.md.
`paths(folder)` / `motion_path(folder, schedule)` say where each weight lives in the shipped folder
or in one written by the build, `check_build(folder)` refuses a folder that is not one;
`read_record(folder)` reads its build.json.
"""
from __future__ import annotations

import json
import os

from animatediff_jax.errors import InputError

MINIATURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "miniature")
# Sizes and steps of the default jobs (the miniature's training resolution and the original's DDIM steps).
DEFAULT_SAMPLE = dict(width=32, height=32, frames=16, steps=25)
MOTION_LORA_DIRECTION = "right"  # the motion the miniature's MotionLoRA is trained on (its file is named so)


def default_jobs(prompts: list | None = None) -> list[tuple[str, dict, list]]:
    """(name, loading.load_pipeline kwargs, prompts) of each default job. With `prompts`, one job:
    the miniature base + motion module on those prompts."""
    base = dict(base=os.path.join(MINIATURE, "base"), motion_module=motion_path(MINIATURE, "B"))
    if prompts:
        return [("miniature base + motion module", base, list(prompts))]
    dreambooth = dict(base, dreambooth=os.path.join(MINIATURE, "dreambooth"))
    return [("miniature base + motion module", base, ["a red circle moving right", "a blue square moving down"]),
            ("miniature DreamBooth (sks) + motion module", dreambooth,
             ["sks, a yellow triangle moving left on stripes background",
              "sks, a green circle moving up on stripes background"])]


def paths(folder: str) -> dict[str, str]:
    """Where every weight of the miniature lives under `folder` (the shipped one: `MINIATURE`)."""
    return dict(tokenizer=os.path.join(folder, "base", "tokenizer"),
                vae=os.path.join(folder, "base", "vae.safetensors"),
                text=os.path.join(folder, "base", "text_encoder.safetensors"),
                base=os.path.join(folder, "base", "unet.safetensors"), dreambooth=os.path.join(folder, "dreambooth"),
                lora=os.path.join(folder, "lora_checker.safetensors"), motion=motion_path(folder, "B"),
                motion_lora=os.path.join(folder, f"motion_lora_{MOTION_LORA_DIRECTION}.safetensors"),
                record=os.path.join(folder, "build.json"))


def check_build(folder: str, flag: str = "--weights") -> None:
    """InputError in one line unless `folder` holds a miniature build's base model (tokenizer, VAE, text
    encoder, UNet: what every use of it needs), naming what is wrong: missing, a file, or what it lacks."""
    if not os.path.lexists(folder):
        what = "does not exist"
    elif not os.path.isdir(folder):
        what = "is a file, not the folder a miniature build writes"
    else:
        missing = [p for key, p in paths(folder).items() if key in ("tokenizer", "vae", "text", "base")
                   and not os.path.exists(p)]
        if not missing:
            return
        what = f"not a miniature build (no {missing[0]})"
    raise InputError(f"{flag} {folder}: {what}; python -m animatediff_jax.miniature.build writes one")


def motion_path(folder: str, schedule: str) -> str:
    """The motion module trained under noise schedule `schedule` ('A', 'B' or 'C')."""
    return os.path.join(folder, f"motion_module_{schedule}.safetensors")


def read_record(folder: str) -> dict:
    """The build record (build.json: {stage: {budget, seconds, steps, ...}, 'seeds': ...}) of the
    weights in `folder`; {} when there is none. InputError naming the file when it is not one."""
    path = paths(folder)["record"]
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not a readable build record ({e}); delete it or restore it") from None
    if not (isinstance(record, dict) and all(isinstance(v, (dict, str)) for v in record.values())  # str: notes
            and isinstance(record.get("motion", {}), dict)
            and isinstance(record.get("motion", {}).get("schedules", {}), dict)):
        raise InputError(f"{path}: not a build record (a JSON object of stage entries); delete it or restore it")
    return record
