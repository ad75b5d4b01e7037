"""Train AnimateDiff motion modules (or fine-tune the image UNet, or LoRA / MotionLoRA factors)
against a frozen SD1.x base.

    python -m animatediff_jax.train --config configs/training/training.yaml --workdir runs/mm \
        train_batch_size=32 mesh.fsdp=8 max_train_steps=100000

This is the command line only: it reads and checks the whole config (training/config.py, where every
key is documented) and the packages the run needs, before importing JAX or building any model, so
`--help` and every config error answer in well under two seconds. The run itself is
`training/trainer.py`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import signal
from typing import Sequence

from animatediff_jax.data import require_data_extra
from animatediff_jax.errors import ArgumentParser, InputError, UserError, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.outputs import input_path, is_url, path_or_url
from animatediff_jax.training.config import HUB_KEYS, TrainingConfig, load_config

# The model-file keys and the `loading.ModelFiles` role of each.
MODEL_KEYS = {"pretrained_model_path": "base", "motion_module_path": "motion_module"}
# Packages the run imports that a lighter install may lack: name -> what needs it.
RUN_REQUIREMENTS = {"tensorboardX": "the TensorBoard writer of the training metrics"}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m animatediff_jax.train", description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Every key, its meaning and allowed values: animatediff_jax/training/config.py "
               "(unknown keys are errors). Numbers are read by the key's type: learning_rate=1e-4 works.")
    parser.add_argument("--config", type=input_path, metavar="YAML",
                        help="training config (configs/training/*.yaml); default: the built-in defaults")
    parser.add_argument("--workdir", required=True, metavar="DIR", type=path_or_url,
                        help="checkpoints, TensorBoard logs, validation samples and exports; a run resumes "
                             "from the checkpoints found here")
    parser.add_argument("--check-config", action="store_true",
                        help="check the config and overrides (keys, types, ranges, relations; the model files and "
                             "tokenizer found here, but not whether paths exist, which may be so only on the hosts "
                             "that train), say so and exit: what "
                             "tpu/launch.sh and tpu/gpu_cluster.sh run before starting the workers")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, dotted keys (train_data.sample_size=256), values read as YAML")
    return parser


def check_requirements(cfg: TrainingConfig) -> None:
    """UserError naming the package when one the run imports, or the export it ends with, needs is not
    installed (found without importing it): before training, not after it."""
    for name, purpose in RUN_REQUIREMENTS.items():
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{name}: not installed, but needed for {purpose} (pip install {name})")
    if cfg.train_data.source == "tfds":
        require_data_extra("to read train_data.source tfds")
    if importlib.util.find_spec("torch") is not None:
        return
    torch = 'torch: not installed, but needed to write {what}, a PyTorch pickle (pip install -e ".[torch]"); or {fix}'
    if cfg.lora.rank and not cfg.lora_file.endswith(".safetensors"):
        raise UserError(torch.format(what=f"lora.file {cfg.lora_file!r}", fix="name it .safetensors"))
    if not cfg.lora.rank and "original" in cfg.export_formats:
        raise UserError(torch.format(what="export_formats 'original' (motion_module.ckpt)",
                                     fix="set export_formats=[diffusers]"))


def located_models(cfg: TrainingConfig) -> TrainingConfig:
    """`cfg` with each model input given as a hub id (`HUB_KEYS`) replaced by its snapshot folder in
    the Hugging Face cache, downloaded when the hub is reachable (`loading.locate`, as sample and
    data.precompute find one); one error line naming the key for an id that cannot be had."""
    from animatediff_jax.loading import HUB_PATTERNS, locate  # noqa: PLC0415 - imports JAX: not for --help
    given = {key: getattr(cfg, key) for key in HUB_KEYS if getattr(cfg, key)}
    return dataclasses.replace(cfg, **{key: locate(path, key, HUB_PATTERNS[HUB_KEYS[key]])
                                       for key, path in given.items()})


def check_model_inputs(cfg: TrainingConfig) -> None:
    """The model files the config names, where they are on this machine (a hub id not downloaded yet, or
    a path only the training hosts have, is left to the run): each is what its key takes
    (`check_model_file`), and a tokenizer is found (`check_tokenizer_source`). Before JAX or any model."""
    for key in MODEL_KEYS:
        path = getattr(cfg, key)
        if path and os.path.exists(path):
            check_model_file(key, path)
    check_tokenizer_source(cfg)


def check_model_file(key: str, path: str) -> None:
    """InputError `<key>: <path>: <problem>` when `path` (which exists) is not what the model-file `key`
    (`MODEL_KEYS`) takes: a file of no known checkpoint format, or a file of another role
    (`file_roles.check_model_path`: one of this project's converted files, another tool's motion LoRA or
    LoRA, a folder holding no SD1.x model), said with the key or `sample` flag that takes it."""
    from animatediff_jax.file_roles import check_model_path  # noqa: PLC0415 - imports JAX
    from animatediff_jax.loading import FLAGS, check_file_format  # noqa: PLC0415
    labels = {**{role: f"sample's {flag}" for role, flag in FLAGS.items()},
              **{role: k for k, role in MODEL_KEYS.items()}}
    try:
        check_file_format(path, f"{key}:")
        check_model_path(path, MODEL_KEYS[key], names={MODEL_KEYS[key]: f"{key}:"}, labels=labels)
    except InputError as e:
        raise InputError(str(e) if str(e).startswith(f"{key}:") else f"{key}: {e}") from None


def check_tokenizer_source(cfg: TrainingConfig) -> None:
    """InputError naming the key when the CLIP tokenizer the run reads (`tokenizer_path`, else the base's
    `tokenizer/`) is damaged (`tokenizer.check_tokenizer`) or not there: a base without one (the
    miniature's DreamBooth folder, any single file) needs `tokenizer_path`. A path not on this machine is
    left to the run."""
    from animatediff_jax.tokenizer import check_tokenizer  # noqa: PLC0415 - imports tokenizers, numpy
    key = "tokenizer_path" if cfg.tokenizer_path else "pretrained_model_path"
    path = getattr(cfg, key)
    if not os.path.exists(path) or check_tokenizer(path, key) is not None:
        return
    if key == "tokenizer_path":
        raise InputError(f"tokenizer_path: {path}: no CLIP tokenizer there (needs vocab.json + merges.txt, or "
                         "tokenizer.json)")
    raise InputError(f"pretrained_model_path: {path} has no tokenizer "
                     f"({'a single file' if os.path.isfile(path) else 'a folder without tokenizer/'}); set "
                     "tokenizer_path=<a CLIP tokenizer folder>, e.g. the tokenizer/ of the SD1.x base it was "
                     "trained from")


def run(args: argparse.Namespace) -> int:
    if args.check_config:
        check_model_inputs(load_config(args.config, args.overrides, paths=False))
        print(f"config ok: {args.config or 'the built-in defaults'} with {len(args.overrides)} override(s)")
        return 0
    cfg = load_config(args.config, args.overrides)
    if cfg.distributed.single_host:  # not on many hosts: the others would see process 0's lock
        from animatediff_jax.training.workdir_lock import check_free
        check_free(args.workdir)
    from animatediff_jax.training.remote_workdir import check_workdir  # fsspec: not for --help
    check_workdir(args.workdir)
    if not is_url(args.workdir):
        from animatediff_jax.run_folder import check_writable_parent  # imports numpy: not for --help
        check_writable_parent(args.workdir, "--workdir")
    check_requirements(cfg)
    cfg = located_models(cfg)
    check_model_inputs(cfg)  # what each file is, and a tokenizer, before the models load
    # Lazy: JAX, Flax, orbax, tensorboardX and the networks take seconds to import; the checks above
    # (and --help) must not wait for them.
    import jax

    from animatediff_jax.training.trainer import train
    result = train(cfg, args.workdir)
    if result["preempted"]:  # the trainer said which step it saved; 143 (SIGTERM) or 130 (Ctrl-C) tells a
        return 128 + (result["signal"] or signal.SIGTERM)  # scheduler a stopped, resumable run from a finished one
    if jax.process_index() == 0:
        print(summary(result, cfg.max_train_steps), flush=True)
    return 0


def summary(result: dict, max_steps: int) -> str:
    """The line a run that reached `max_steps` ends with."""
    if result["start"] > max_steps:
        return (f"already past max_train_steps: the run's checkpoint is at step {result['start']}, above "
                f"max_train_steps {max_steps}; nothing trained or written (raise max_train_steps to continue it)")
    if result["start"] == max_steps and (result.get("exported") or result.get("validated")):
        done = ([f"its validation samples (missing) rendered from that checkpoint: {', '.join(result['validated'])}"]
                if result.get("validated") else [])
        if result.get("exported"):
            done.append(f"its exports (missing or from an earlier step) written from that checkpoint: "
                        f"{', '.join(result['exported'])}")
        return f"already finished: step {result['step']} of {max_steps} (max_train_steps); {'; '.join(done)}"
    if result["start"] == max_steps:
        return f"already finished: step {result['step']} of {max_steps} (max_train_steps); nothing to train"
    return f"done: step {result['step']}, loss {result['loss']:.5f}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: run(build_parser().parse_intermixed_args(argv)))


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
