"""Noise schedules and samplers vs diffusers' schedulers, step for step, in float32.

A deterministic fake model (a fixed random array times a function of the step, plus a term in the
scaled input) stands in for the UNet; both loops get the same model outputs for the same inputs,
and stochastic samplers get the identical noise (ours drawn from the per-step key, handed to
diffusers as `variance_noise` or through its `randn_tensor`).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler)
from diffusers.schedulers import scheduling_euler_ancestral_discrete, scheduling_lcm
from diffusers.training_utils import compute_snr

from animatediff_jax.sampling import samplers as S
from animatediff_jax.schedules import PRESETS, NoiseSchedule, add_noise, snr, velocity
from tests.utils import rel_err

SHAPE = (1, 4, 3, 6, 5)  # (batch, channels, frames, h, w), diffusers' video latent layout
DIFFUSERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
             "euler_ancestral": EulerAncestralDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
             "lcm": LCMScheduler}


def _assert_close(ours, ref, tol=1e-5):
    """max |ours - ref| <= tol, relative to the magnitude where values are large (Euler's sigma ~ 25)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(ours - ref).max() <= tol * scale, (np.abs(ours - ref).max(), scale, rel_err(ours, ref))


def _fake_model_np(base, x_in, i):
    return (base * np.cos(0.3 * i + 0.1) + 0.1 * x_in).astype(np.float32)


def _noises(key, n):
    """The noise `Sampler.step` draws from each step's key."""
    draw = jax.jit(lambda k: jax.random.normal(k, SHAPE, jnp.float32))
    return [np.array(draw(k)) for k in jax.random.split(key, n)]


def _run_both(name, sched_kwargs, n, options=None, strength=1.0, monkeypatch=None, seed=0):
    """Run our sampler and diffusers' over a full loop; compare everything per step."""
    options = options or {}
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(SHAPE).astype(np.float32)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    x0_init = rng.standard_normal(SHAPE).astype(np.float32)
    eta = options.get("eta", 0.0)
    ours = S.sampler_from_diffusers_config(sched_kwargs, name, n, strength=strength, **options)
    ref = DIFFUSERS[name](**sched_kwargs)
    ref.set_timesteps(n)
    start = S.start_index(n, strength)
    ref_ts = ref.timesteps[start:]
    if start:
        if hasattr(ref, "set_begin_index"):
            ref.set_begin_index(start)
    key = jax.random.key(seed, impl="rbg")  # any key works; rbg compiles much faster than threefry on CPU
    noises = _noises(key, ours.num_steps) if ours.stochastic else []
    queue = [torch.from_numpy(z.copy()) for z in noises]
    if monkeypatch is not None:
        def fake(shape, **kw):
            z = queue.pop(0)
            assert tuple(z.shape) == tuple(shape)
            return z

        for mod in (scheduling_euler_ancestral_discrete, scheduling_lcm):
            monkeypatch.setattr(mod, "randn_tensor", fake)

    if ours.timesteps.dtype == np.int32:
        np.testing.assert_array_equal(ours.timesteps, ref_ts.numpy())
    else:  # Euler's fractional timesteps (Karras: interpolated in log-sigma)
        np.testing.assert_allclose(ours.timesteps, ref_ts.numpy(), rtol=1e-5, atol=1e-4)
    assert ours.num_steps == len(ref_ts)
    np.testing.assert_allclose(ours.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-6)
    if strength < 1.0:
        x_ref = ref.add_noise(torch.from_numpy(x0_init), torch.from_numpy(x_T), ref_ts[:1])
        x = ours.add_noise(jnp.asarray(x0_init), jnp.asarray(x_T))
    else:
        x_ref = torch.from_numpy(x_T) * ref.init_noise_sigma
        x = jnp.asarray(x_T) * ours.init_noise_sigma
    _assert_close(x, x_ref)

    state = ours.init_state(x)
    step = jax.jit(ours.step)
    keys = jax.random.split(key, ours.num_steps) if ours.stochastic else [None] * ours.num_steps
    for i, t in enumerate(ref_ts):
        xin_ref = ref.scale_model_input(x_ref, t)
        xin = ours.scale_model_input(x, i)
        _assert_close(xin, xin_ref)
        out_ref = torch.from_numpy(_fake_model_np(base, xin_ref.numpy(), i))
        out = jnp.asarray(_fake_model_np(base, np.asarray(xin), i))
        kw = {}
        if name == "ddim":
            kw = dict(eta=eta, variance_noise=torch.from_numpy(noises[i]) if eta > 0 else None)
        x_ref = ref.step(out_ref, t, x_ref, **kw).prev_sample
        x, state = step(state, i, out, x, keys[i])
        _assert_close(x, x_ref)
    if monkeypatch is not None:  # LCM's last step only denoises: its key goes unused
        assert len(queue) == (1 if name == "lcm" else 0), "diffusers drew a different number of noises"
    return ours


SCHED = {k: dict(v) for k, v in PRESETS.items()}


@pytest.mark.parametrize("spacing,offset,n,eta,sched", [
    ("leading", 1, 25, 0.0, "B"), ("linspace", 0, 10, 0.0, "A"), ("trailing", 0, 12, 0.0, "C"),
    ("leading", 1, 8, 0.7, "B"), ("trailing", 0, 7, 1.0, "A"),
])
def test_ddim_matches_diffusers(spacing, offset, n, eta, sched):
    cfg = dict(SCHED[sched], timestep_spacing=spacing, steps_offset=offset, clip_sample=False)
    _run_both("ddim", cfg, n, dict(eta=eta))


def test_ddim_vpred_clip_no_alpha_one():
    cfg = dict(SCHED["A"], clip_sample=True, set_alpha_to_one=False, prediction_type="v_prediction",
               steps_offset=1)
    _run_both("ddim", cfg, 9)


@pytest.mark.parametrize("spacing,karras,pred", [("linspace", False, "epsilon"), ("leading", False, "v_prediction"),
                                                 ("trailing", True, "epsilon")])
def test_euler_matches_diffusers(spacing, karras, pred):
    cfg = dict(SCHED["A"], timestep_spacing=spacing, steps_offset=1, use_karras_sigmas=karras,
               prediction_type=pred)
    _run_both("euler", cfg, 11)


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_euler_ancestral_matches_diffusers(spacing, monkeypatch):
    _run_both("euler_ancestral", dict(SCHED["B"], timestep_spacing=spacing), 9, monkeypatch=monkeypatch)


@pytest.mark.parametrize("karras,n,spacing,pred", [(False, 25, "linspace", "epsilon"), (True, 25, "linspace", "epsilon"),
                                                   (True, 10, "leading", "v_prediction"),
                                                   (False, 7, "trailing", "epsilon")])
def test_dpmpp_2m_matches_diffusers(karras, n, spacing, pred):
    cfg = dict(SCHED["B"], algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=karras,
               timestep_spacing=spacing, steps_offset=1, prediction_type=pred)
    _run_both("dpmpp_2m", cfg, n)


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m", "lcm"])
def test_sample_prediction_matches_diffusers(name, monkeypatch):
    cfg = dict(SCHED["A"], prediction_type="sample", **({"clip_sample": False} if name == "ddim" else {}))
    _run_both(name, cfg, 5, monkeypatch=monkeypatch)


def test_dpmpp_2m_sigma_min_final_long():
    cfg = dict(SCHED["A"], final_sigmas_type="sigma_min", lower_order_final=True)
    _run_both("dpmpp_2m", cfg, 16)


@pytest.mark.parametrize("n,sched", [(4, "A"), (6, "B")])
def test_lcm_matches_diffusers(n, sched, monkeypatch):
    _run_both("lcm", dict(SCHED[sched]), n, monkeypatch=monkeypatch)


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m"])
def test_strength_matches_diffusers_get_timesteps(name):
    cfg = dict(SCHED["B"], steps_offset=1, **({"clip_sample": False} if name == "ddim" else {}))
    s = _run_both(name, cfg, 20, strength=0.6)
    assert s.num_steps == 12


def test_original_animatediff_ddim():
    s = S.original_ddim()
    np.testing.assert_array_equal(s.timesteps, np.arange(961, 0, -40))
    assert s.timesteps.dtype == np.int32 and s.init_noise_sigma == 1.0 and not s.stochastic
    assert s.options["set_alpha_to_one"] and not s.options["clip_sample"]
    assert s.options["timestep_spacing"] == "leading" and s.options["beta_schedule"] == "linear"
    assert s.coef["a_prev"][-1] == 1.0  # set_alpha_to_one: the last step lands on abar = 1
    # the original builds DDIMScheduler(**noise_scheduler_kwargs); diffusers' defaults fill the rest
    _run_both("ddim", S.ORIGINAL_SCHEDULER_KWARGS, 25)
    assert S.make_sampler("ddim", "B", 25).coef["a_t"].tolist() == s.coef["a_t"].tolist()


SD15_SCHEDULER_CONFIG = {  # stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False}


def test_sd15_pndm_config_gives_diffusers_ddim(tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(SD15_SCHEDULER_CONFIG))
    ours = S.sampler_from_diffusers_config(path, num_inference_steps=25)
    ref = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    ref.set_timesteps(25)
    assert ours.name == "ddim" and not ours.options["set_alpha_to_one"]
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    # from another class's config, diffusers' Euler keeps its own defaults for missing keys
    eul = S.sampler_from_diffusers_config(SD15_SCHEDULER_CONFIG, "euler", 10)
    ref = EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    ref.set_timesteps(10)
    np.testing.assert_allclose(eul.timesteps, ref.timesteps.numpy(), atol=1e-4)
    np.testing.assert_allclose(eul.coef["sigma"], ref.sigmas[:-1].numpy(), rtol=5e-6)  # abar float64 vs 32


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown sampler"):
        S.make_sampler("pndm")
    with pytest.raises(ValueError, match="unknown options.*'etaa'"):
        S.make_sampler("ddim", "B", 25, etaa=1.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        S.make_sampler("ddim", "B", 25, eta=1.5)
    # Why 1 is the bound: the direction term's variance 1 - abar_prev - std^2 is >= 0 up to eta 1 only.
    c = S.make_sampler("ddim", "B", 25, eta=1.0).coef
    assert (1 - c["a_prev"] - c["std"] ** 2 >= -1e-12).all() and (1 - c["a_prev"] - (1.5 * c["std"]) ** 2 < 0).any()
    with pytest.raises(ValueError, match="thresholding"):
        S.sampler_from_diffusers_config(dict(SD15_SCHEDULER_CONFIG, thresholding=True))
    with pytest.raises(ValueError, match="not supported"):
        S.sampler_from_diffusers_config({"_class_name": "HeunDiscreteScheduler"})
    with pytest.raises(ValueError, match="algorithm_type='sde-dpmsolver\\+\\+'"):
        S.sampler_from_diffusers_config({"_class_name": "DPMSolverMultistepScheduler",
                                         "algorithm_type": "sde-dpmsolver++"})
    # keys the target class does not take are ignored, as diffusers' from_config does
    ddpm = {"_class_name": "DDPMScheduler", "variance_type": "fixed_small", "clip_sample": False}
    assert S.sampler_from_diffusers_config(ddpm, num_inference_steps=5).name == "ddim"
    with pytest.raises(FileNotFoundError, match="scheduler config not found"):
        S.sampler_from_diffusers_config(tmp_path / "missing.json")
    (tmp_path / "latin1.json").write_bytes(b'{"_class_name": "caf\xe9"}')  # was a UnicodeDecodeError
    with pytest.raises(ValueError, match=r"latin1\.json: not UTF-8 text \(byte 0xe9 at offset 20\)$"):
        S.sampler_from_diffusers_config(tmp_path / "latin1.json")
    with pytest.raises(ValueError, match="strength"):
        S.make_sampler("ddim", "B", 10, strength=0.05)
    with pytest.raises(ValueError, match="timestep_spacing"):
        S.make_sampler("euler", "B", 10, timestep_spacing="uniform")
    with pytest.raises(ValueError, match="preset"):
        NoiseSchedule.preset("D")
    with pytest.raises(ValueError, match="PRNG key"):
        S.make_sampler("euler_ancestral", "B", 5).step((), 0, jnp.zeros(SHAPE), jnp.zeros(SHAPE))


@pytest.mark.parametrize("preset", ["A", "B", "C"])
def test_noising_matches_ddpm_scheduler(preset):
    sch = NoiseSchedule.preset(preset)
    ref = DDPMScheduler(**PRESETS[preset])
    np.testing.assert_allclose(sch.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=2e-6)
    np.testing.assert_allclose(sch.betas, ref.betas.numpy(), rtol=1e-6)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((5, 4, 3, 6, 5)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0, 1, 500, 998, 999])
    tt = torch.from_numpy(t)
    ours = add_noise(sch, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t))
    _assert_close(ours, ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), tt), 2e-6)
    v = velocity(sch.alphas_cumprod, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t))  # array form too
    _assert_close(v, ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), tt), 2e-6)
    a = sch.alphas_cumprod.astype(np.float64)[t]
    np.testing.assert_allclose(snr(sch, jnp.asarray(t)), a / (1 - a), rtol=1e-6)
    # vs diffusers' training_utils.compute_snr where 1 - abar is not dominated by float32 rounding of abar
    t = np.nonzero(1 - ref.alphas_cumprod.numpy() > 0.05)[0][::7]
    np.testing.assert_allclose(snr(sch, jnp.asarray(t)), compute_snr(ref, torch.from_numpy(t)).numpy(), rtol=1e-5)


def test_cosine_schedule_matches_diffusers():
    sch = NoiseSchedule.create("squaredcos_cap_v2", num_train_timesteps=1000)
    ref = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(sch.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=2e-6, atol=1e-9)
