"""Sampling: samplers (pure step functions), context windows, FreeInit, prompt travel, prompt configs,
and the pipeline (configs + params -> jitted denoise step -> chunked decode; no file formats inside)."""
