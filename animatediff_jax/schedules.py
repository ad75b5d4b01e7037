"""Noise schedules of the diffusion process and the forward (noising) side used in training.

    betas_t (t = 0..T-1),  alpha_t = 1 - beta_t,  abar_t = prod_{s<=t} alpha_s
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps          (`add_noise`)
    v_t = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0          (`velocity`, the v-prediction target)
    snr_t = abar_t / (1 - abar_t)                          (`snr`)

The paper ablates three schedules (presets):
    "A": SD's `scaled_linear`, betas = linspace(sqrt(0.00085), sqrt(0.012), T)^2
    "B": `linear` 0.00085 -> 0.012 (AnimateDiff's default, training and sampling)
    "C": `linear` 0.0001 -> 0.02 (DDPM's)
Arrays are computed in float64 and stored as float32 numpy arrays (constants under jit); the
step functions of the samplers live in `sampling/samplers.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# What a network predicts (diffusers' names): the noise eps, v = sqrt(abar) eps - sqrt(1 - abar) x_0, or x_0.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_betas(beta_schedule: str, beta_start: float = 0.0001, beta_end: float = 0.02,
               num_train_timesteps: int = 1000) -> np.ndarray:
    """Betas (T,) float64 for a diffusers `beta_schedule` name."""
    T = int(num_train_timesteps)
    if T < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal's cosine alpha-bar, betas capped at 0.999
        abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)])
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete noise schedule. `betas`, `alphas_cumprod`: (T,) float32 numpy arrays."""
    beta_schedule: str
    beta_start: float
    beta_end: float
    num_train_timesteps: int
    betas: np.ndarray
    alphas_cumprod: np.ndarray

    @classmethod
    def create(cls, beta_schedule: str = "linear", beta_start: float = 0.00085, beta_end: float = 0.012,
               num_train_timesteps: int = 1000, trained_betas: Sequence[float] | None = None
               ) -> "NoiseSchedule":
        """Build from diffusers-style settings (defaults: schedule B); `trained_betas` overrides them."""
        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64)
            if betas.ndim != 1 or betas.size < 1 or not np.all((betas > 0) & (betas < 1)):
                raise ValueError("trained_betas must be a non-empty 1-D list of values in (0, 1)")
            beta_schedule, num_train_timesteps = "trained_betas", betas.size
        else:
            betas = make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps)
        abar = np.cumprod(1.0 - betas)
        return cls(beta_schedule, float(beta_start), float(beta_end), int(num_train_timesteps),
                   betas.astype(np.float32), abar.astype(np.float32))

    @classmethod
    def preset(cls, name: str) -> "NoiseSchedule":
        """One of the paper's schedules "A", "B", "C" (see the module docstring)."""
        if name not in PRESETS:
            raise ValueError(f"unknown noise schedule preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.create(**PRESETS[name])

    def config(self) -> dict:
        """The diffusers scheduler-config keys describing this schedule."""
        out = dict(beta_schedule=self.beta_schedule, beta_start=self.beta_start, beta_end=self.beta_end,
                   num_train_timesteps=self.num_train_timesteps)
        if self.beta_schedule == "trained_betas":
            out = dict(num_train_timesteps=self.num_train_timesteps, trained_betas=self.betas.tolist())
        return out


PRESETS = {
    "A": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000),
    "B": dict(beta_schedule="linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000),
    "C": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000),
}


def _abar(schedule) -> jnp.ndarray:
    """alphas_cumprod (T,) of a NoiseSchedule, or the array itself."""
    return jnp.asarray(schedule.alphas_cumprod if isinstance(schedule, NoiseSchedule) else schedule,
                       jnp.float32)


def _per_sample(values: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """(B,) -> (B, 1, ..., 1) to broadcast over a batch of `ndim`-d arrays; scalars pass through."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim)) if values.ndim else values


def add_noise(schedule, x0: jnp.ndarray, noise: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    schedule: NoiseSchedule or alphas_cumprod (T,); x0, noise: (B, ...); t: (B,) or scalar int.
    """
    a = _per_sample(_abar(schedule)[jnp.asarray(t)], x0.ndim)
    out = jnp.sqrt(a) * x0.astype(jnp.float32) + jnp.sqrt(1.0 - a) * noise.astype(jnp.float32)
    return out.astype(x0.dtype)


def velocity(schedule, x0: jnp.ndarray, noise: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (Salimans & Ho 2022), shapes as `add_noise`."""
    a = _per_sample(_abar(schedule)[jnp.asarray(t)], x0.ndim)
    out = jnp.sqrt(a) * noise.astype(jnp.float32) - jnp.sqrt(1.0 - a) * x0.astype(jnp.float32)
    return out.astype(x0.dtype)


def snr(schedule, t: jnp.ndarray) -> jnp.ndarray:
    """Signal-to-noise ratio abar_t / (1 - abar_t) at integer timesteps `t` (any shape)."""
    a = _abar(schedule)[jnp.asarray(t)]
    return a / (1.0 - a)
