"""Two real processes (jax.distributed over 127.0.0.1, gloo CPU collectives), four devices each,
FSDP across both: 3 steps with per-host data give identical params on both hosts, equal to one
process with eight devices."""
import os
import socket
import subprocess
import sys

import numpy as np

from animatediff_jax import train
from animatediff_jax.training.config import load_config
from convert.naming import flatten
from tests.training import tiny
from tests.utils import rel_err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    tok = tiny.write_tokenizer(tmp_path / "tok")
    overrides = tiny.overrides(tok, mesh={"data": 1, "fsdp": 8, "tensor": 1}, max_train_steps=3,
                               checkpointing_steps=2)
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.training.multihost_worker", str(port), str(i), str(tmp_path / "run"),
         str(tmp_path / f"host{i}.npz"), *overrides],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "2 process(es)" in logs[0] and "step 3/3" in logs[0]
    hosts = [dict(np.load(tmp_path / f"host{i}.npz")) for i in range(2)]
    assert all(int(h.pop("_local_devices")) == 4 for h in hosts)
    losses = [float(h.pop("_loss")) for h in hosts]
    assert losses[0] == losses[1]
    assert hosts[0].keys() == hosts[1].keys()
    for k in hosts[0]:
        assert np.array_equal(hosts[0][k], hosts[1][k]), k

    single = train.train(load_config(None, overrides), str(tmp_path / "single"))
    ref = {"/".join(p): np.asarray(v) for p, v in flatten(single["params"]).items()}
    assert ref.keys() == hosts[0].keys()
    flat = lambda d: np.concatenate([d[k].ravel() for k in sorted(d)])
    assert rel_err(flat(hosts[0]), flat(ref)) < 1e-5
    assert abs(losses[0] - single["loss"]) <= 1e-5 * abs(single["loss"])
