"""DiskCachedProgram: traced programs exported to disk and called from there; what it will not serve
runs the plain jitted function. (Two processes sampling: tests/sampling/test_compilation_cache.py.)"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from animatediff_jax.sampling.program_cache import DiskCachedProgram, program_dir


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path))


def _fn(params, x):
    return {"y": jnp.tanh(x @ params["w"]) + params["b"], "n": x.sum()}


def _args(seed=0, rows=3):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.standard_normal((4, 5), np.float32)), "b": jnp.asarray(rng.standard_normal(5, np.float32))}
    return params, jnp.asarray(rng.standard_normal((rows, 4), np.float32))


def _files():
    return sorted(os.listdir(program_dir())) if os.path.isdir(program_dir()) else []


def test_exports_once_and_a_new_instance_reads_the_file():
    params, x = _args()
    want = jax.jit(_fn)(params, x)
    first = DiskCachedProgram("toy", "config A", jax.jit(_fn))
    np.testing.assert_array_equal(first(params, x)["y"], want["y"])
    (name,) = _files()
    assert name.startswith("toy-") and name.endswith(".jaxexport")

    traced = []

    def tracing(params, x):
        traced.append(1)
        return _fn(params, x)
    second = DiskCachedProgram("toy", "config A", jax.jit(tracing))  # a later run: same key
    out = second(params, x)
    assert traced == []  # the program came from the file, the Python function never ran
    np.testing.assert_array_equal(out["y"], want["y"])
    np.testing.assert_array_equal(out["n"], want["n"])


def test_key_covers_the_static_description_and_the_shapes():
    params, x = _args()
    DiskCachedProgram("toy", "config A", jax.jit(_fn))(params, x)
    DiskCachedProgram("toy", "config B", jax.jit(_fn))(params, x)
    DiskCachedProgram("toy", "config A", jax.jit(_fn))(*_args(rows=7))
    assert len(_files()) == 3


def test_damaged_file_is_exported_anew():
    params, x = _args()
    DiskCachedProgram("toy", "k", jax.jit(_fn))(params, x)
    (name,) = _files()
    with open(os.path.join(program_dir(), name), "wb") as f:
        f.write(b"not a program")
    out = DiskCachedProgram("toy", "k", jax.jit(_fn))(params, x)
    np.testing.assert_allclose(out["y"], jax.jit(_fn)(params, x)["y"], rtol=1e-6)
    assert os.path.getsize(os.path.join(program_dir(), name)) > 100


def test_committed_and_uncommitted_arguments_share_one_program(caplog):
    params, x = _args()
    prog = DiskCachedProgram("toy", "k", jax.jit(_fn))
    prog(params, x)
    with jax.log_compiles(), caplog.at_level("DEBUG"):
        prog(params, jax.device_put(x, jax.devices()[0]))  # committed, as a step's own outputs are
    assert not [r for r in caplog.records if "toy" in r.getMessage()]  # nothing traced or compiled again
    assert prog.compiled_count() == 1


def test_what_it_cannot_serve_runs_the_jitted_function(tmp_path):
    params, x = _args()
    jitted = jax.jit(_fn)
    if jax.device_count() > 1:  # the test session simulates 8 CPU devices (conftest)
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
        sharded = jax.device_put(jnp.ones((4, 4)), NamedSharding(mesh, PartitionSpec("data")))
        np.testing.assert_allclose(DiskCachedProgram("toy", "k", jitted)(params, sharded)["y"],
                                   jitted(params, sharded)["y"], rtol=1e-6)
    DiskCachedProgram("toy", "k", jax.jit(lambda p, s: _fn(p, x * s)))(params, 2.0)  # Python scalar
    DiskCachedProgram("toy", "<object at 0x7f00>", jitted)(params, x)  # unstable description
    assert _files() == []


def test_unwritable_folder_warns_once_and_still_runs(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(blocker))
    params, x = _args()
    with pytest.warns(UserWarning, match=r"a-file/programs: cannot write \(") as caught:
        out = DiskCachedProgram("toy", "k", jax.jit(_fn))(params, x)
        DiskCachedProgram("toy2", "k", jax.jit(_fn))(params, x)
    assert len([w for w in caught if "program cache" in str(w.message)]) == 1
    np.testing.assert_allclose(out["y"], jax.jit(_fn)(params, x)["y"], rtol=1e-6)
