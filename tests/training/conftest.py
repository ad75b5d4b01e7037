"""The training tests compile the same tiny programs in several processes (in-process runs, CLI
subprocesses, two-host workers): share one persistent compilation cache among them."""
import os

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jax_cache"))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", path)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # inherited by the subprocesses
    yield
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    jax.config.update("jax_compilation_cache_dir", previous)
