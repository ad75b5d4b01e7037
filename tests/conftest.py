"""Test-wide settings: float32 parity needs full-precision matmuls on every backend."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Eight simulated CPU devices for the sharding tests; unsharded code runs on device 0 as usual.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The tests check what programs compute, not how fast they run, and most of their time is XLA compiling
# small programs: its CPU kernels are compiled without LLVM's optimisation passes (the same HLO; the
# suite passes at both levels, in a quarter to a third less time for the training and miniature build
# tests). Speed is measured by benchmarks/, and the CI's default sample runs at XLA's default level. An XLA_FLAGS that sets the
# level itself is kept: `XLA_FLAGS=--xla_backend_optimization_level=3 pytest` tests optimised kernels.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.utils import use_hub_cache  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:
        yield
        return
    torch.manual_seed(0)
    yield


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline, that hub ids resolve through (`tests.utils.use_hub_cache`);
    add repositories with `tests.utils.cache_repo`."""
    return use_hub_cache(tmp_path / "hf_cache", monkeypatch)
