"""Joining the other hosts: `distributed.initialize=auto` off a cluster was a ValueError traceback, and a
process whose coordinator never came up sat silent until JAX aborted it (SIGABRT, a C++ stack trace)."""
import os
import re
import socket
import subprocess
import sys

import pytest

from animatediff_jax import sharding
from animatediff_jax.errors import UsageError
from animatediff_jax.host_port import split_host_port
from animatediff_jax.training.config import load_config
from tests.training import tiny


BASE = "pretrained_model_path=stable-diffusion-v1-5/stable-diffusion-v1-5"  # a hub id: no file needed to load


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auto_without_a_cluster_is_one_line(tmp_path):
    """JAX finds no TPU pod, SLURM or MPI environment here: its ValueError becomes the config's line (in a
    fresh process: JAX joins only before its backends start, which this test process has done)."""
    overrides = tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"))
    done = subprocess.run([sys.executable, "-m", "animatediff_jax.train", "--workdir", str(tmp_path / "run"),
                           *overrides, "distributed.initialize=auto"], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_"))})
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(r"error: distributed.initialize auto: no cluster found to join \(.+\); for one host set "
                        r"distributed.initialize=false, .*\n", done.stderr), done.stderr
    assert not (tmp_path / "run").exists()


def test_a_coordinator_that_never_answers_is_one_line_before_jax_waits(monkeypatch, capsys):
    monkeypatch.setattr(sharding.jax.distributed, "initialize", lambda *a, **k: pytest.fail("JAX was asked to join"))
    monkeypatch.setattr(sharding, "JOIN_TIMEOUT_S", 1)
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(UsageError, match=rf"^distributed.coordinator_address {address}: nothing answered in 1 s "
                                         r"\(.+\); start process 0"):
        sharding.initialize_distributed(address, 2, 1)
    assert capsys.readouterr().out == f"process 1 of 2: waiting for the coordinator at {address} (up to 1 s)\n"


def test_a_listening_coordinator_lets_the_join_go_ahead(monkeypatch):
    joined = []
    monkeypatch.setattr(sharding.jax.distributed, "initialize", lambda *a: joined.append(a))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        sharding.initialize_distributed(address, 2, 1)
    assert joined == [(address, 2, 1)]


@pytest.mark.parametrize("address", ["no-port", "host:", ":1234", "host:http", "localhost:99999", "host:0",
                                     "http://h:1234", "::1:1234"])
def test_a_malformed_coordinator_address_is_named_when_the_config_loads(address):
    """Before JAX loads (the config is checked first), not after ~5 s of imports, nor a wait on a port
    that cannot exist."""
    keys = [f"distributed.coordinator_address={address}", "distributed.num_processes=2", "distributed.process_id=1"]
    with pytest.raises(UsageError, match=rf"^distributed.coordinator_address '{re.escape(address)}': expected "
                                         r"host:port \(a port 1-65535"):
        load_config(None, [BASE, *keys])
    with pytest.raises(UsageError, match="expected host:port"):
        sharding.wait_for_coordinator(address, 1)


@pytest.mark.parametrize("address, host, port", [("gpu-0:12345", "gpu-0", 12345), ("10.0.0.1:1", "10.0.0.1", 1),
                                                 ("[::1]:1234", "::1", 1234)])
def test_coordinator_addresses_in_every_form_read_back(address, host, port):
    assert split_host_port(address, "k") == (host, port)
    cfg = load_config(None, [BASE, f"distributed.coordinator_address={address}", "distributed.num_processes=2",
                             "distributed.process_id=1"])  # unquoted [::1]:1234 was a YAML parser error
    assert cfg.distributed.coordinator_address == address
