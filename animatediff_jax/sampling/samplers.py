"""Samplers (DDIM, Euler, Euler ancestral, DPM-Solver++ 2M, LCM) as pure step functions.

Everything that depends only on the step index — timesteps, sigmas, alphas, solver coefficients —
is precomputed in numpy when the sampler is made; `step` gathers those per-step scalars with the
(traced) index `i`, so one compiled step serves every step (or the loop runs in a `lax.scan`):

    s = make_sampler("ddim", NoiseSchedule.preset("B"), 25)            # or original_ddim()
    x = noise * s.init_noise_sigma; state = s.init_state(x)
    for i in range(s.num_steps):
        out = unet(s.scale_model_input(x, i), s.timestep(i), ...)
        x, state = s.step(state, i, out, x, key_i)      # key(s): eta>0 DDIM, ancestral, LCM; one per video or one

Numerics follow diffusers' schedulers (DDIMScheduler, EulerDiscreteScheduler,
EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler(dpmsolver++, order 2), LCMScheduler)
and are checked step for step against them in tests/sampling/test_schedules_parity.py.
Option names are diffusers' config names. The loop works in float32 whatever the model's dtype.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.text_files import read_json_object
from animatediff_jax.schedules import PREDICTION_TYPES, PRESETS, NoiseSchedule

SAMPLERS = ("ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm")
SPACINGS = ("linspace", "leading", "trailing")

# Options of make_sampler, with their defaults. DDIM's are the original AnimateDiff's (its inference
# configs: linear 0.00085 -> 0.012, steps_offset 1, clip_sample false; diffusers-0.11 DDIM: "leading"
# spacing, set_alpha_to_one true), the others are diffusers'.
OPTIONS: dict[str, dict[str, Any]] = {
    "ddim": dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=True, clip_sample=False,
                 clip_sample_range=1.0, prediction_type="epsilon", eta=0.0),
    "euler": dict(timestep_spacing="linspace", steps_offset=0, prediction_type="epsilon",
                  use_karras_sigmas=False),
    "euler_ancestral": dict(timestep_spacing="linspace", steps_offset=0, prediction_type="epsilon"),
    "dpmpp_2m": dict(timestep_spacing="linspace", steps_offset=0, prediction_type="epsilon",
                     use_karras_sigmas=False, solver_order=2, lower_order_final=True, euler_at_final=False,
                     final_sigmas_type="zero", lambda_min_clipped=-math.inf),
    "lcm": dict(original_inference_steps=50, timestep_scaling=10.0, clip_sample=False, clip_sample_range=1.0,
                prediction_type="epsilon"),
}
# Where diffusers' class defaults differ from ours (used for keys a scheduler config leaves out).
_DIFFUSERS_DEFAULTS = {"ddim": dict(steps_offset=0, clip_sample=True)}
_CLASS_TO_SAMPLER = {
    "DDIMScheduler": "ddim", "PNDMScheduler": "ddim", "DDPMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "DPMSolverMultistepScheduler": "dpmpp_2m", "LCMScheduler": "lcm",
}
# Scheduler-config settings we do not implement, per sampler (keys its diffusers class accepts),
# with the only values accepted; keys a class does not accept are ignored, as diffusers does.
_ACCEPTED = {
    "thresholding": (False,), "rescale_betas_zero_snr": (False,), "algorithm_type": ("dpmsolver++",),
    "solver_type": ("midpoint",), "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,),
    "use_lu_lambdas": (False,), "use_flow_sigmas": (False,), "use_dynamic_shifting": (False,),
    "timestep_type": ("discrete",), "interpolation_type": ("linear",), "variance_type": (None,),
    "sigma_min": (None,), "sigma_max": (None,), "final_sigmas_type": ("zero",),
}
_UNSUPPORTED_KEYS = {
    "ddim": ("thresholding", "rescale_betas_zero_snr"),
    "euler": ("rescale_betas_zero_snr", "use_exponential_sigmas", "use_beta_sigmas", "timestep_type",
              "interpolation_type", "sigma_min", "sigma_max", "final_sigmas_type"),
    "euler_ancestral": ("rescale_betas_zero_snr",),
    "dpmpp_2m": ("thresholding", "rescale_betas_zero_snr", "algorithm_type", "solver_type",
                 "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
                 "use_dynamic_shifting", "variance_type", "sigma_min", "sigma_max"),
    "lcm": ("thresholding", "rescale_betas_zero_snr"),
}


@dataclass(frozen=True, eq=False)
class Sampler:
    """A sampler for a fixed number of steps: per-step constants + pure functions of (i, arrays)."""
    name: str
    timesteps: np.ndarray                   # (S,) model timesteps, descending; int32 (float32 for Euler)
    init_noise_sigma: float                 # initial noise = N(0, I) * init_noise_sigma
    prediction_type: str
    coef: Mapping[str, np.ndarray]          # per-step float32 scalars, each (S,)
    noise_scale: tuple[float, float]        # (a, s): add_noise(x0, n) = a x0 + s n at the first step
    stochastic: bool                        # step needs a PRNG key
    options: Mapping[str, Any] = field(default_factory=dict)  # resolved options (for logs/configs)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def fingerprint(self) -> str:
        """sha256 of every constant a traced step closes over (timesteps, per-step coefficients,
        noise scale, options): equal fingerprints trace to the same program."""
        digest = hashlib.sha256(repr((self.name, self.init_noise_sigma, self.prediction_type, self.noise_scale,
                                      self.stochastic, sorted(self.options.items()))).encode())
        for name, values in [("timesteps", self.timesteps)] + sorted(self.coef.items()):
            array = np.ascontiguousarray(values)
            digest.update(f"{name}{array.dtype}{array.shape}".encode() + array.tobytes())
        return digest.hexdigest()

    def timestep(self, i) -> jnp.ndarray:
        """The model's timestep at step `i` (traceable; `timesteps` itself is a numpy array)."""
        return jnp.asarray(self.timesteps)[i]

    def coefficient(self, name: str, i) -> jnp.ndarray:
        """Per-step scalar `name` at step `i` (float32)."""
        return jnp.asarray(self.coef[name])[i]

    def scale_model_input(self, x: jnp.ndarray, i) -> jnp.ndarray:
        """The UNet's input at step i (Euler samplers divide by sqrt(sigma^2 + 1))."""
        return (x.astype(jnp.float32) * self.coefficient("in_scale", i)).astype(x.dtype)

    def init_state(self, x: jnp.ndarray):
        """Scan state: DPM-Solver's previous data prediction, else empty."""
        return jnp.zeros(x.shape, jnp.float32) if self.name == "dpmpp_2m" else ()

    def step(self, state, i, model_output: jnp.ndarray, x: jnp.ndarray, key: jax.Array | None = None):
        """One denoising step from x (B, ...) at step i to the next; returns (x_prev, state).

        key (stochastic samplers): one PRNG key for the whole of x, or a batch of B keys, one per
        video (raw (B, 2) uint32 or typed (B,)), each drawing that video's noise alone."""
        if self.stochastic and key is None:
            raise ValueError(f"sampler {self.name!r} with these options is stochastic: step needs a PRNG key")
        out, x32 = model_output.astype(jnp.float32), x.astype(jnp.float32)
        x_prev, state = _STEPS[self.name](self, state, i, out, x32, key)
        return x_prev.astype(x.dtype), state

    def add_noise(self, x0: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
        """Noise clean latents to the first step's level (video-to-video with strength < 1)."""
        a, s = self.noise_scale
        return (a * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)


# ----------------------------------------------------------------------------- shared pieces

def _noise(key, x):
    """N(0, I) like x (B, ...): from one key, or per video from a batch of B keys."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.ndim == (1 if typed else 2):
        if key.shape[0] != x.shape[0]:
            raise ValueError(f"{key.shape[0]} keys for a batch of {x.shape[0]}")
        return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(key)
    return jax.random.normal(key, x.shape, jnp.float32)


def _x0_and_eps(prediction_type: str, out, x, a_t):
    """(x0, eps) from a model output, for abar_t = a_t (DDIM/LCM parameterisation)."""
    if prediction_type == "epsilon":
        return (x - jnp.sqrt(1 - a_t) * out) / jnp.sqrt(a_t), out
    if prediction_type == "v_prediction":
        return jnp.sqrt(a_t) * x - jnp.sqrt(1 - a_t) * out, jnp.sqrt(a_t) * out + jnp.sqrt(1 - a_t) * x
    return out, (x - jnp.sqrt(a_t) * out) / jnp.sqrt(1 - a_t)


def _clip(s: Sampler, x0):
    r = s.options["clip_sample_range"]
    return jnp.clip(x0, -r, r) if s.options["clip_sample"] else x0


def start_index(num_inference_steps: int, strength: float) -> int:
    """First step index for img2img/video-to-video `strength` (diffusers' get_timesteps)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    init = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - init, 0)
    if start >= num_inference_steps:
        raise ValueError(f"strength {strength} leaves no denoising step out of {num_inference_steps}; "
                         "raise strength or the number of steps")
    return start


def denoising_steps(num_inference_steps: int, strength: float = 1.0) -> int:
    """How many steps the denoising loop runs for `num_inference_steps` at video-to-video `strength`
    (all of them at 1.0; `start_index` says where they start and refuses a strength that leaves none)."""
    return num_inference_steps - start_index(num_inference_steps, strength)


def _spaced_timesteps(spacing: str, T: int, n: int, offset: int, rounded: bool) -> np.ndarray:
    """The diffusers timestep spacings (float64, descending); `rounded` rounds "linspace"."""
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n)
        ts = ts.round() if rounded else ts.astype(np.float32).astype(np.float64)
        return ts[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float64) + offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)) - 1.0
    raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {SPACINGS}")


def _train_sigmas(schedule: NoiseSchedule) -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t), (T,) ascending in t (float32 as diffusers computes it)."""
    a = schedule.alphas_cumprod.astype(np.float32)
    return np.sqrt((1 - a) / a).astype(np.float32)


def _karras(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) sigmas, (n,) descending."""
    ramp = np.linspace(0, 1, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _sigma_to_t(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps whose interpolated log-sigma equals log(sigmas)."""
    log_train = np.log(train_sigmas)  # float32, as diffusers
    return np.interp(np.log(np.maximum(sigmas, 1e-10)), log_train, np.arange(len(train_sigmas), dtype=np.float64))


# ----------------------------------------------------------------------------- DDIM

def _ddim_build(sch: NoiseSchedule, n: int, start: int, o: dict):
    T = sch.num_train_timesteps
    ts = _spaced_timesteps(o["timestep_spacing"], T, n, o["steps_offset"], rounded=True).astype(np.int64)
    abar = sch.alphas_cumprod.astype(np.float64)
    if ts.max() >= T or ts.min() < 0:
        raise ValueError(f"DDIM timesteps {ts.min()}..{ts.max()} fall outside 0..{T - 1} "
                         f"({n} steps, steps_offset {o['steps_offset']})")
    prev = ts - T // n  # diffusers' DDIM steps back by T // n whatever the spacing
    final = 1.0 if o["set_alpha_to_one"] else abar[0]
    a_t = abar[ts]
    a_prev = np.where(prev >= 0, abar[np.clip(prev, 0, T - 1)], final)
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    coef = dict(a_t=a_t, a_prev=a_prev, std=o["eta"] * np.sqrt(var), in_scale=np.ones(n))
    return ts, coef, 1.0, (np.sqrt(a_t[start]), np.sqrt(1 - a_t[start])), o["eta"] > 0


def _ddim_step(s: Sampler, state, i, out, x, key):
    a_t, a_prev, std = s.coefficient("a_t", i), s.coefficient("a_prev", i), s.coefficient("std", i)
    x0, eps = _x0_and_eps(s.prediction_type, out, x, a_t)
    x0 = _clip(s, x0)
    x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev - std ** 2) * eps
    if s.stochastic:
        x_prev = x_prev + std * _noise(key, x)
    return x_prev, state


# ----------------------------------------------------------------------------- Euler (+ ancestral)

def _euler_build(sch: NoiseSchedule, n: int, start: int, o: dict, ancestral: bool):
    T = sch.num_train_timesteps
    ts = _spaced_timesteps(o["timestep_spacing"], T, n, o["steps_offset"], rounded=False)
    train = _train_sigmas(sch)
    sig = np.interp(ts, np.arange(T), train)
    if o.get("use_karras_sigmas"):
        sig = _karras(sig[0], sig[-1], n)
        ts = _sigma_to_t(sig, train)
    sig = np.concatenate([sig, [0.0]]).astype(np.float32).astype(np.float64)
    s_from, s_to = sig[:-1], sig[1:]
    sig_max = float(sig.max())
    init = sig_max if o["timestep_spacing"] in ("linspace", "trailing") else math.sqrt(sig_max ** 2 + 1)
    coef = dict(sigma=s_from, sigma_next=s_to, in_scale=1 / np.sqrt(s_from ** 2 + 1))
    if ancestral:
        up = np.sqrt(s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2)
        coef.update(sigma_up=up, sigma_down=np.sqrt(s_to ** 2 - up ** 2))
    return ts.astype(np.float32), coef, init, (1.0, s_from[start]), ancestral


def _euler_x0(s: Sampler, out, x, sigma):
    if s.prediction_type == "epsilon":
        return x - sigma * out
    if s.prediction_type == "v_prediction":
        return out * (-sigma / jnp.sqrt(sigma ** 2 + 1)) + x / (sigma ** 2 + 1)
    return out


def _euler_step(s: Sampler, state, i, out, x, key):
    sigma = s.coefficient("sigma", i)
    d = (x - _euler_x0(s, out, x, sigma)) / sigma
    if s.name == "euler":
        return x + d * (s.coefficient("sigma_next", i) - sigma), state
    x_prev = x + d * (s.coefficient("sigma_down", i) - sigma)
    return x_prev + _noise(key, x) * s.coefficient("sigma_up", i), state


# ----------------------------------------------------------------------------- DPM-Solver++ 2M

def _alpha_sigma(sig):
    """VP (alpha_t, sigma_t) of a VE sigma: alpha = 1/sqrt(sigma^2+1), sigma_t = sigma * alpha."""
    alpha = 1 / np.sqrt(sig ** 2 + 1)
    return alpha, sig * alpha


def _dpm_build(sch: NoiseSchedule, n: int, start: int, o: dict):
    if o["solver_order"] not in (1, 2):
        raise ValueError(f"dpmpp_2m: solver_order must be 1 or 2, got {o['solver_order']}")
    if o["final_sigmas_type"] not in ("zero", "sigma_min"):
        raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {o['final_sigmas_type']!r}")
    T = sch.num_train_timesteps
    abar = sch.alphas_cumprod.astype(np.float32)
    lam = np.log(np.sqrt(abar)) - np.log(np.sqrt(1 - abar))
    last = T - int(np.searchsorted(lam[::-1], o["lambda_min_clipped"]))
    sp = o["timestep_spacing"]
    if sp == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    elif sp == "leading":
        ts = (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1] + o["steps_offset"]
    elif sp == "trailing":
        ts = np.arange(last, 0, -T / n).round() - 1
    else:
        raise ValueError(f"unknown timestep_spacing {sp!r}; choose one of {SPACINGS}")
    train = _train_sigmas(sch)
    if o["use_karras_sigmas"]:
        sig = _karras(float(train[-1]), float(train[0]), n)
        ts = _sigma_to_t(sig, train).round()
    else:
        sig = np.interp(ts, np.arange(T), train)
    ts = ts.astype(np.int64)
    final = float(train[0]) if o["final_sigmas_type"] == "sigma_min" else 0.0
    sig = np.concatenate([sig, [final]]).astype(np.float32).astype(np.float64)
    alpha, sigma = _alpha_sigma(sig)
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # +inf at sigma = 0
    h = lam[1:] - lam[:-1]                                        # lambda_t - lambda_s0, (n,)
    h0 = np.concatenate([[np.nan], lam[1:-1] - lam[:-2]])         # lambda_s0 - lambda_s1
    idx = np.arange(n)
    final_first = (idx == n - 1) & (o["euler_at_final"] or (o["lower_order_final"] and n < 15)
                                    or o["final_sigmas_type"] == "zero")
    second = (o["solver_order"] == 2) & (idx > start) & ~final_first
    with np.errstate(divide="ignore", invalid="ignore"):
        r0_inv = np.where(second, h / h0, 0.0)
    coef = dict(alpha_s0=alpha[:-1], sigma_s0=sigma[:-1], ratio=sigma[1:] / sigma[:-1],
                phi=alpha[1:] * (np.exp(-h) - 1.0), r0_inv=r0_inv, second=second.astype(np.float64),
                in_scale=np.ones(n))
    return ts, coef, 1.0, (alpha[start], sigma[start]), False


def _dpm_step(s: Sampler, m1, i, out, x, key):
    a, sg = s.coefficient("alpha_s0", i), s.coefficient("sigma_s0", i)
    if s.prediction_type == "epsilon":
        m0 = (x - sg * out) / a
    elif s.prediction_type == "v_prediction":
        m0 = a * x - sg * out
    else:
        m0 = out
    phi = s.coefficient("phi", i)
    x_prev = s.coefficient("ratio", i) * x - phi * m0
    x_prev = x_prev - s.coefficient("second", i) * 0.5 * phi * (s.coefficient("r0_inv", i) * (m0 - m1))
    return x_prev, m0


# ----------------------------------------------------------------------------- LCM

def _lcm_build(sch: NoiseSchedule, n: int, start: int, o: dict):
    T, orig = sch.num_train_timesteps, int(o["original_inference_steps"])
    if not 1 <= orig <= T:
        raise ValueError(f"original_inference_steps must be in 1..{T}, got {orig}")
    if n > orig:
        raise ValueError(f"lcm: {n} steps exceed original_inference_steps {orig}")
    origin = (np.arange(1, orig + 1) * (T // orig) - 1)[::-1]
    ts = origin[np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)]
    abar = sch.alphas_cumprod.astype(np.float64)
    a_t = abar[ts]
    a_prev = abar[np.concatenate([ts[1:], ts[-1:]])]
    st = ts * float(o["timestep_scaling"])
    c_skip = 0.25 / (st ** 2 + 0.25)                # sigma_data = 0.5
    c_out = st / np.sqrt(st ** 2 + 0.25)
    coef = dict(a_t=a_t, a_prev=a_prev, c_skip=c_skip, c_out=c_out, renoise=(np.arange(n) != n - 1) * 1.0,
                in_scale=np.ones(n))
    return ts, coef, 1.0, (np.sqrt(a_t[start]), np.sqrt(1 - a_t[start])), True


def _lcm_step(s: Sampler, state, i, out, x, key):
    a_t, a_prev = s.coefficient("a_t", i), s.coefficient("a_prev", i)
    x0, _ = _x0_and_eps(s.prediction_type, out, x, a_t)
    denoised = s.coefficient("c_out", i) * _clip(s, x0) + s.coefficient("c_skip", i) * x
    renoised = jnp.sqrt(a_prev) * denoised + jnp.sqrt(1 - a_prev) * _noise(key, x)
    return jnp.where(s.coefficient("renoise", i) > 0, renoised, denoised), state


_BUILDERS: dict[str, Callable] = {
    "ddim": _ddim_build,
    "euler": lambda *a: _euler_build(*a, ancestral=False),
    "euler_ancestral": lambda *a: _euler_build(*a, ancestral=True),
    "dpmpp_2m": _dpm_build,
    "lcm": _lcm_build,
}
_STEPS: dict[str, Callable] = {"ddim": _ddim_step, "euler": _euler_step, "euler_ancestral": _euler_step,
                               "dpmpp_2m": _dpm_step, "lcm": _lcm_step}


# ----------------------------------------------------------------------------- construction

def make_sampler(name: str, schedule: NoiseSchedule | str = "B", num_inference_steps: int = 25,
                 strength: float = 1.0, **options) -> Sampler:
    """A sampler `name` (one of SAMPLERS) over `schedule` (a NoiseSchedule or preset "A"/"B"/"C").

    options: diffusers config names, defaults in OPTIONS[name]. strength < 1 keeps the last
    steps only (video-to-video; noise the input with `Sampler.add_noise`).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise ValueError(f"sampler {name!r}: unknown options {unknown}; valid: {sorted(OPTIONS[name])}")
    o = {**OPTIONS[name], **options}
    if o["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {o['prediction_type']!r}")
    if "timestep_spacing" in o and o["timestep_spacing"] not in SPACINGS:
        raise ValueError(f"unknown timestep_spacing {o['timestep_spacing']!r}; choose one of {SPACINGS}")
    if name == "ddim" and not 0 <= o["eta"] <= 1:
        # eta interpolates deterministic DDIM (0) and DDPM's posterior noise (1); above 1 the noise
        # outgrows 1 - alpha_bar_prev and the direction term's square root is of a negative number
        raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM's noise), got {o['eta']}")
    sch = NoiseSchedule.preset(schedule) if isinstance(schedule, str) else schedule
    n = int(num_inference_steps)
    if not 1 <= n <= sch.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{sch.num_train_timesteps}, got {num_inference_steps}")
    start = start_index(n, strength)
    ts, coef, init_sigma, noise_scale, stochastic = _BUILDERS[name](sch, n, start, o)
    coef = {k: np.asarray(v, np.float64)[start:].astype(np.float32) for k, v in coef.items()}
    ts = ts[start:].astype(np.float32 if name.startswith("euler") else np.int32)
    o.update(num_inference_steps=n, strength=strength, **sch.config())
    return Sampler(name, ts, float(np.float32(init_sigma)), o["prediction_type"], coef,
                   (float(noise_scale[0]), float(noise_scale[1])), bool(stochastic), o)


def sampler_from_diffusers_config(config: Mapping[str, Any] | str | os.PathLike, name: str | None = None,
                                  num_inference_steps: int = 25, strength: float = 1.0, **overrides) -> Sampler:
    """A sampler honouring a diffusers `scheduler_config.json` (a dict or the file's path).

    Like diffusers' `XScheduler.from_config(config)`: keys the sampler knows come from the config,
    the rest are the diffusers class defaults. `name` defaults to the config's `_class_name`
    (PNDM/DDPM configs, as SD1.5 ships, give DDIM). Original AnimateDiff `noise_scheduler_kwargs`
    with name="ddim" reproduce its `DDIMScheduler(**kwargs)`. `overrides`: options (and `eta`).
    """
    if not isinstance(config, Mapping):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"scheduler config not found: {path}")
        try:
            config = read_json_object(path)
        except ValueError as e:  # not UTF-8 text, not JSON, not an object
            raise ValueError(f"{path}: {e}") from None
    config = dict(config)
    if name is None:
        cls = config.get("_class_name", "DDIMScheduler")
        if cls not in _CLASS_TO_SAMPLER:
            raise ValueError(f"scheduler class {cls!r} is not supported; pass name= one of {SAMPLERS} "
                             f"(known classes: {sorted(_CLASS_TO_SAMPLER)})")
        name = _CLASS_TO_SAMPLER[cls]
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")
    for key in _UNSUPPORTED_KEYS[name]:
        if key in config and config[key] not in _ACCEPTED[key]:
            raise ValueError(f"scheduler config sets {key}={config[key]!r}, which the {name} sampler does not "
                             f"support (supported: {_ACCEPTED[key][0]!r})")
    opts = {**OPTIONS[name], **_DIFFUSERS_DEFAULTS.get(name, {})}
    opts.update({k: v for k, v in config.items() if k in OPTIONS[name]})
    opts.update(overrides)
    default = PRESETS["A" if name == "lcm" else "C"]  # diffusers' scheduler defaults: LCM's are SD's
    schedule = NoiseSchedule.create(
        beta_schedule=config.get("beta_schedule", default["beta_schedule"]),
        beta_start=config.get("beta_start", default["beta_start"]),
        beta_end=config.get("beta_end", default["beta_end"]),
        num_train_timesteps=config.get("num_train_timesteps", default["num_train_timesteps"]),
        trained_betas=config.get("trained_betas"))
    return make_sampler(name, schedule, num_inference_steps, strength=strength, **opts)


# The original AnimateDiff's configs/inference/inference-v*.yaml `noise_scheduler_kwargs`: schedule B.
ORIGINAL_SCHEDULER_KWARGS = dict(beta_start=PRESETS["B"]["beta_start"], beta_end=PRESETS["B"]["beta_end"],
                                 beta_schedule=PRESETS["B"]["beta_schedule"], steps_offset=1, clip_sample=False)


def original_ddim(num_inference_steps: int = 25, eta: float = 0.0, strength: float = 1.0) -> Sampler:
    """The original AnimateDiff sampler: DDIM over schedule B, "leading" spacing, steps_offset 1,
    set_alpha_to_one, no clipping (25 steps: timesteps 961, 921, ..., 1)."""
    return sampler_from_diffusers_config(ORIGINAL_SCHEDULER_KWARGS, "ddim", num_inference_steps,
                                         strength=strength, eta=eta)

