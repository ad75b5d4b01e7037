"""Validation sampling during training: the configured prompts rendered to GIFs from the current weights.

    sampler = Validator(cfg, workdir, configs, frozen_host, tokenizer, unet_params_fn)
    if sampler.due(step):
        sampler(step, trained_params)     # -> <workdir>/samples/step-<N>/NN.gif (+ grid.gif)

As the original AnimateDiff `train.py`: every `validation_steps` steps (and at the steps listed in
`validation_steps_tuple`) each prompt of `validation_data` is sampled with DDIM over the training
noise schedule, seed `global_seed + i`. The sampling code is `AnimateDiffPipeline`, built from host
(numpy) copies of the weights, so the sharded train state is only read (gathered), never donated or
changed. Call it on one process (the caller's job: the gather is collective, the sampling is not).
"""
from __future__ import annotations

import json
import os
from typing import Callable, Mapping

from animatediff_jax.errors import UsageError
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training.config import TrainingConfig
from animatediff_jax.video import write_gif, write_grid


def scheduler_config(noise_schedule: str, prediction_type: str) -> dict:
    """The DDIM config sampling a model trained with this schedule and prediction type (the
    original's validation: `DDIMScheduler(**noise_scheduler_kwargs)`, steps_offset 1)."""
    return {"_class_name": "DDIMScheduler", **NoiseSchedule.preset(noise_schedule).config(),
            "steps_offset": 1, "clip_sample": False, "prediction_type": prediction_type}


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
        self.seed, self.directory = cfg.global_seed, os.path.join(workdir, "samples")
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
        return (self.every > 0 and step % self.every == 0) or step in self.extra

    def _pipeline(self, unet_params) -> AnimateDiffPipeline:
        unet_cfg, motion_cfg, vae_cfg, text_cfg = self.configs
        vae, text = (None, None) if unet_params is None else (self.frozen["vae"], self.frozen["text_encoder"])
        return AnimateDiffPipeline.build(unet_cfg, motion_cfg, vae_cfg, text_cfg, unet_params, vae, text,
                                         self.tokenizer, **self.options)

    def __call__(self, step: int, trained: Mapping, stop: Callable[[], bool] | None = None) -> list[str]:
        """Sample every prompt from the trained params (numpy) at `step`; returns the written paths.
        `stop` is asked after each denoising step: when it says True, SamplingStopped is raised and
        nothing is written."""
        pipe = self._pipeline(self.unet_params(trained))
        seeds = [self.seed + i for i in range(len(self.prompts))]
        frames = pipe(self.prompts, seeds=seeds, width=self.width, height=self.height, frames=self.frames,
                      steps=self.steps, guidance_scale=self.guidance, progress=False, stop=stop).frames
        folder = os.path.join(self.directory, f"step-{step}")
        os.makedirs(folder, exist_ok=True)
        written = [write_gif(os.path.join(folder, f"{i:02d}.gif"), video, overwrite=True)
                   for i, video in enumerate(frames)]
        written.append(write_grid(os.path.join(folder, "grid.gif"), frames, overwrite=True))
        with open(os.path.join(folder, "prompts.json"), "w", encoding="utf-8") as f:
            json.dump({"step": step, "prompts": self.prompts, "seeds": seeds}, f, indent=1)
        return written
