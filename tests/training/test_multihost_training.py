"""Two real processes (jax.distributed over 127.0.0.1, gloo CPU collectives), one device each, FSDP
across both: 3 steps with per-host data give identical params on both hosts, equal to one process
with two devices and the same mesh."""
import os
import socket
import sys

import numpy as np

from tests.training import tiny
from tests.training.processes import run_together
from tests.utils import rel_err, xla_flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(tmp_path, port, n, devices, overrides):
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu")
    name = "host" if port else "single"
    logs = run_together([
        [sys.executable, "-m", "tests.training.multihost_worker", str(port), str(i), str(tmp_path / name),
         str(tmp_path / f"{name}{i}.npz"), *overrides] for i in range(n)], env, timeout=600)
    return logs, [dict(np.load(tmp_path / f"{name}{i}.npz")) for i in range(n)]


def test_two_processes_equal_one(tmp_path):
    base = tiny.write_base(tmp_path / "base")
    overrides = tiny.base_overrides(base, mesh={"data": 1, "fsdp": 2, "tensor": 1}, max_train_steps=3)
    logs, hosts = _workers(tmp_path, _free_port(), 2, 1, overrides)
    assert "2 process(es)" in logs[0] and "step 3/3" in logs[0]
    assert all(int(h.pop("_local_devices")) == 1 for h in hosts)
    losses = [float(h.pop("_loss")) for h in hosts]
    assert losses[0] == losses[1]
    assert hosts[0].keys() == hosts[1].keys()
    for k in hosts[0]:
        assert np.array_equal(hosts[0][k], hosts[1][k]), k

    _, (single,) = _workers(tmp_path, 0, 1, 2, overrides)
    assert int(single.pop("_local_devices")) == 2
    single_loss = float(single.pop("_loss"))
    assert single.keys() == hosts[0].keys()
    flat = lambda d: np.concatenate([d[k].ravel() for k in sorted(d)])
    assert rel_err(flat(hosts[0]), flat(single)) < 1e-6
    assert abs(losses[0] - single_loss) <= 1e-5 * abs(single_loss)
