"""Validation sampling during training: the configured prompts rendered to GIFs from the current weights.

    sampler = Validator(cfg, workdir, configs, frozen_host, tokenizer, unet_params_fn)
    if sampler.due(step):
        sampler(step, trained_params)     # -> <workdir>/samples/step-<N>/NN.gif (+ grid.gif, prompts.json)

As the original AnimateDiff `train.py`: every `validation_steps` steps (and at the steps listed in
`validation_steps_tuple`) each prompt of `validation_data` is sampled with DDIM over the training
noise schedule, seed `global_seed + i`. The sampling code is `AnimateDiffPipeline`, built from host
(numpy) copies of the weights, so the sharded train state is only read (gathered), never donated or
changed. Call it on one process (the caller's job: the gather is collective, the sampling is not).
A step's folder is written whole or not at all (`outputs.atomic_folder`): a run killed while rendering
leaves none, and `samples_missing` tells a re-run which due step's samples it has to render.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Mapping

from animatediff_jax.errors import UsageError
from animatediff_jax.outputs import atomic_folder
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training import remote_workdir
from animatediff_jax.training.config import TrainingConfig
from animatediff_jax.video import write_gif, write_grid


def scheduler_config(noise_schedule: str, prediction_type: str) -> dict:
    """The DDIM config sampling a model trained with this schedule and prediction type (the
    original's validation: `DDIMScheduler(**noise_scheduler_kwargs)`, steps_offset 1)."""
    return {"_class_name": "DDIMScheduler", **NoiseSchedule.preset(noise_schedule).config(),
            "steps_offset": 1, "clip_sample": False, "prediction_type": prediction_type}


def samples_folder(workdir: str, step: int) -> str:
    """Where the validation samples of `step` are: `<workdir>/samples/step-<N>` (a path or a URL)."""
    return os.path.join(workdir, "samples", f"step-{step}")


def sample_names(prompts: int) -> list[str]:
    """The files of a step's samples folder for `prompts` prompts: NN.gif each, grid.gif, prompts.json."""
    return [f"{i:02d}.gif" for i in range(prompts)] + ["grid.gif", "prompts.json"]


def due_at(every: int, extra, step: int) -> bool:
    """Whether validation sampling is due at `step` (every `every` steps, 0: never, and at the steps `extra`)."""
    return step > 0 and ((every > 0 and step % every == 0) or step in extra)


def samples_missing(cfg: TrainingConfig, workdir: str, step: int) -> bool:
    """Whether validation sampling is due at `step` and a file of its samples is not in `workdir` (a run
    stopped or killed while rendering them: the folder is written whole, but a copy to a URL workdir, or
    a folder of an earlier version, may be partial). File reads only: no model, no devices."""
    if not cfg.validating or not due_at(cfg.validation_steps, set(cfg.validation_steps_tuple), step):
        return False
    folder = samples_folder(workdir, step)
    return not all(remote_workdir.exists(os.path.join(folder, name))
                   for name in sample_names(len(cfg.validation_data.prompts)))


class Validator:
    """Samples `validation_data` to GIFs. configs = (unet, motion, vae, text) configs; frozen =
    host params {'vae': full VAE incl. decoder, 'text_encoder': ...}; `unet_params(trained)` gives the
    full UNet params for the trained subtree (merged with, or LoRA-fused into, the frozen UNet)."""

    def __init__(self, cfg: TrainingConfig, workdir: str, configs: tuple, frozen: Mapping, tokenizer,
                 unet_params: Callable[[Mapping], Mapping]):
        v, d = cfg.validation_data, cfg.train_data
        self.every, self.extra = cfg.validation_steps, set(cfg.validation_steps_tuple)
        self.prompts = list(v.prompts)
        self.frames = 1 if cfg.image_finetune else (v.video_length or d.sample_n_frames)
        self.width, self.height = v.width or d.sample_size, v.height or d.sample_size
        self.steps, self.guidance = v.num_inference_steps, v.guidance_scale
        self.seed, self.workdir = cfg.global_seed, workdir
        self.configs, self.frozen, self.tokenizer, self.unet_params = configs, frozen, tokenizer, unet_params
        self.options = dict(attention_impl=cfg.attention_impl, scheduler="ddim",
                            scheduler_config=scheduler_config(cfg.noise_schedule, cfg.prediction_type))
        if self.enabled:  # what depends on the networks (frame limits, VAE factor); the rest is checked on load
            try:
                self._pipeline(None).check_inputs(width=self.width, height=self.height, frames=self.frames,
                                                  steps=self.steps, context=None, num_prompts=len(self.prompts),
                                                  num_seeds=None)
            except ValueError as e:
                raise UsageError(f"validation_data: {e}") from None

    @property
    def enabled(self) -> bool:
        return self.every > 0 or bool(self.extra)

    def due(self, step: int) -> bool:
        return due_at(self.every, self.extra, step)

    def _pipeline(self, unet_params) -> AnimateDiffPipeline:
        unet_cfg, motion_cfg, vae_cfg, text_cfg = self.configs
        vae, text = (None, None) if unet_params is None else (self.frozen["vae"], self.frozen["text_encoder"])
        return AnimateDiffPipeline.build(unet_cfg, motion_cfg, vae_cfg, text_cfg, unet_params, vae, text,
                                         self.tokenizer, **self.options)

    def __call__(self, step: int, trained: Mapping, stop: Callable[[], bool] | None = None) -> list[str]:
        """Sample every prompt from the trained params (numpy) at `step`; returns the written paths.
        `stop` is asked after each denoising step: when it says True, SamplingStopped is raised and
        nothing is written. The step's folder is replaced whole, once every file is written."""
        pipe = self._pipeline(self.unet_params(trained))
        seeds = [self.seed + i for i in range(len(self.prompts))]
        frames = pipe(self.prompts, seeds=seeds, width=self.width, height=self.height, frames=self.frames,
                      steps=self.steps, guidance_scale=self.guidance, progress=False, stop=stop).frames
        folder = samples_folder(self.workdir, step)
        *gifs, grid, record = sample_names(len(frames))
        with atomic_folder(folder) as tmp:
            for name, video in zip(gifs, frames):
                write_gif(os.path.join(tmp, name), video, overwrite=True)
            write_grid(os.path.join(tmp, grid), frames, overwrite=True)
            with open(os.path.join(tmp, record), "w", encoding="utf-8") as f:
                json.dump({"step": step, "prompts": self.prompts, "seeds": seeds}, f, indent=1)
        return [os.path.join(folder, name) for name in (*gifs, grid)]
