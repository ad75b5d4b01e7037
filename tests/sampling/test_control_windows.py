"""The control residuals inside the step (`control.residuals`): each context window's networks see that
window's control frames and mask; with CFG the conditions repeat for both halves of the doubled batch;
several networks sum; the per-step scale schedule is diffusers' `controlnet_keep`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.models.configs import ControlNetConfig, sparsectrl_motion_config
from animatediff_jax.sampling import control as cn
from tests.convert import controlnet_fixtures as cf
from tests.utils import random_params

F, B = 6, 2
residuals = jax.jit(cn.residuals, static_argnums=0)  # networks static, as in the step


def _net(kind, seed):
    d = dict(cf.CONTROLNET_SMALL if kind == "controlnet" else cf.SPARSECTRL_SCRIBBLE,
             conditioning_embedding_out_channels=(8, 8, 16, 16))
    d["_class_name"] = "ControlNetModel" if kind == "controlnet" else "SparseControlNetModel"
    config = ControlNetConfig.from_dict(d)
    net = cn.ControlNet.build(kind, config, sparsectrl_motion_config(d) if kind == "sparsectrl" else None, {})
    x, t, text = jnp.zeros((1, 2, 4, 4, 4)), jnp.zeros((1,)), jnp.zeros((1, 3, 32))
    extra = {"conditioning_mask": jnp.ones((1, 2))} if kind == "sparsectrl" else {}
    params = random_params(net.network, seed, x, t, text, jnp.zeros((1, 2, 32, 32, 3)), **extra)
    return net.network, params


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, F, 4, 4, 4)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((B, 3, 32)), jnp.float32)
    cond = jnp.asarray(rng.random((B, F, 32, 32, 3)), jnp.float32)
    return x, jnp.asarray([500, 500]), text, cond


def test_a_window_of_a_controlnet_sees_its_own_frames(inputs):
    x, t, text, cond = inputs
    net, params = _net("controlnet", 1)
    args = cn.ControlArgs(params, cond, None, jnp.asarray([0.7, 0.0]))
    full_down, full_mid = residuals((net,), [args], x, t, text, jnp.int32(0), jnp.arange(F))
    idx = jnp.asarray([2, 3, 4, 5])
    down, mid = residuals((net,), [args], x[:, idx], t, text, jnp.int32(0), idx)
    for a, b in zip(down + (mid,), full_down + (full_mid,)):  # per-frame network: the window's slice
        np.testing.assert_allclose(a, b[:, idx], rtol=0, atol=1e-5)
    off_down, off_mid = residuals((net,), [args], x, t, text, jnp.int32(1), jnp.arange(F))
    assert all(not np.any(d) for d in off_down) and not np.any(off_mid)  # step 1 has scale 0: off


def test_a_window_of_sparsectrl_gets_the_windows_condition_and_mask(inputs):
    x, t, text, cond = inputs
    net, params = _net("sparsectrl", 2)
    full, mask = cn.sparse_condition(cond[:, :2], [0, 5], F)
    args = cn.ControlArgs(params, full, mask, jnp.asarray([1.0]))
    idx = jnp.asarray([3, 4, 5])
    down, mid = residuals((net,), [args], x[:, idx], t, text, jnp.int32(0), idx)
    want_down, want_mid = jax.jit(net.apply)({"params": params}, x[:, idx], t, text, full[:, idx],
                                    conditioning_mask=jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0]), (B, 3)))
    for a, b in zip(down + (mid,), want_down + (want_mid,)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert np.array_equal(np.asarray(mask), [1, 0, 0, 0, 0, 1]) and not np.any(np.asarray(full)[:, 1:5])


def test_cfg_repeats_the_conditions_and_networks_sum(inputs):
    x, t, text, cond = inputs
    (n1, p1), (n2, p2) = _net("controlnet", 3), _net("controlnet", 4)
    a1, a2 = (cn.ControlArgs(p, cond, None, jnp.asarray([s])) for p, s in ((p1, 0.5), (p2, 1.5)))
    i, idx = jnp.int32(0), jnp.arange(F)
    doubled = residuals((n1, n2), [a1, a2], jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                           jnp.concatenate([text, text]), i, idx)
    one = [residuals((n,), [a], x, t, text, i, idx) for n, a in ((n1, a1), (n2, a2))]
    for k, d in enumerate(doubled[0] + (doubled[1],)):
        parts = [o[0][k] if k < len(doubled[0]) else o[1] for o in one]
        np.testing.assert_allclose(d[:B], parts[0] + parts[1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(d[B:], d[:B], rtol=0, atol=0)


def test_keep_schedule_is_diffusers_controlnet_keep():
    c = cn.Control(None, None, conditioning_scale=0.8, control_guidance_start=0.2, control_guidance_end=0.7)
    n = 10  # diffusers: keep = 1 - (i / n < start or (i + 1) / n > end)
    want = [0.8 * (1.0 - float(i / n < 0.2 or (i + 1) / n > 0.7)) for i in range(n)]
    np.testing.assert_allclose(cn.keep_schedule(c, n), want, rtol=0, atol=1e-7)
    assert jax.numpy.asarray(cn.keep_schedule(c, n)).dtype == jnp.float32
