"""FreeInit against diffusers' FreeInitMixin (filters and the frequency mix)."""
import numpy as np
import pytest
import torch
from diffusers.pipelines.free_init_utils import FreeInitMixin

from animatediff_jax.sampling.freeinit import FreeInitOptions, lowpass_filter, mix_frequencies, reinitialize
from tests.utils import rel_err


@pytest.mark.parametrize("method", ["butterworth", "gaussian", "ideal"])
def test_lowpass_matches_diffusers(method):
    f, h, w = 5, 6, 8
    opts = FreeInitOptions(method=method, order=4, spatial_stop=0.3, temporal_stop=0.2)
    ref = FreeInitMixin()._get_free_init_freq_filter((1, 4, f, h, w), "cpu", method, 4, 0.3, 0.2)
    np.testing.assert_allclose(lowpass_filter(f, h, w, opts), ref[0, 0].numpy(), rtol=1e-6, atol=1e-7)


def test_mix_matches_diffusers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6, 8)).astype(np.float32)   # diffusers (B, C, F, h, w)
    n = rng.standard_normal(x.shape).astype(np.float32)
    lp = lowpass_filter(5, 6, 8, FreeInitOptions())
    ref = FreeInitMixin()._apply_freq_filter(torch.from_numpy(x), torch.from_numpy(n),
                                             torch.from_numpy(lp)[None, None]).numpy()
    to_ours = lambda a: np.transpose(a, (0, 2, 3, 4, 1))              # (B, F, h, w, C)
    ours = np.asarray(mix_frequencies(to_ours(x), to_ours(n), lp))
    assert rel_err(ours, to_ours(ref)) < 1e-5


def test_reinitialize_is_low_of_diffused_plus_high_of_fresh_start():
    import jax
    x0 = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 4, 2))
    eps = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    fresh_start = jax.random.normal(jax.random.PRNGKey(2), x0.shape)
    diffuse = lambda clean, n: 0.05**0.5 * clean + 0.95**0.5 * n  # noqa: E731
    allpass = np.ones((4, 4, 4), np.float32)  # keep everything: exactly the diffused latents
    out = reinitialize(x0, eps, fresh_start, allpass, diffuse)
    np.testing.assert_allclose(np.asarray(out), np.asarray(diffuse(x0, eps)), atol=1e-5)
    nopass = np.zeros((4, 4, 4), np.float32)  # keep nothing: exactly the fresh start
    out = reinitialize(x0, eps, fresh_start, nopass, diffuse)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fresh_start), atol=1e-5)
