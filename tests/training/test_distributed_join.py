"""Joining the other hosts: `distributed.initialize=auto` off a cluster was a ValueError traceback, and a
process whose coordinator never came up sat silent until JAX aborted it (SIGABRT, a C++ stack trace)."""
import socket

import pytest

from animatediff_jax import sharding
from animatediff_jax.errors import UsageError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auto_without_a_cluster_is_one_line():
    """JAX finds no TPU pod, SLURM or MPI environment here: its ValueError becomes the config's line."""
    with pytest.raises(UsageError, match=r"^distributed.initialize auto: no cluster found to join \(.+\); for one "
                                         r"host set distributed.initialize=false"):
        sharding.initialize_distributed(auto=True)


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


@pytest.mark.parametrize("address", ["no-port", "host:", ":1234", "host:http"])
def test_a_malformed_coordinator_address_is_named(address):
    with pytest.raises(UsageError, match=rf"^distributed.coordinator_address '{address}': expected host:port$"):
        sharding.wait_for_coordinator(address, 1)
