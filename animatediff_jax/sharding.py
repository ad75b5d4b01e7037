"""Mesh, partition rules and multi-host plumbing for sharded training (and sampling).

    mesh = make_mesh(data=-1, fsdp=4, tensor=1)           # ('data', 'fsdp', 'tensor'), -1 = fill
    shardings = tree_shardings(params, mesh, rules=())   # NamedSharding per leaf
    batch = global_batch(local_rows, batch_sharding(mesh), global_batch_size)

Parameters (trainable, frozen and optimizer state alike) are placed by regex rules over their
`/`-joined paths, then FSDP-sharded over the largest dimension the `fsdp` axis divides (big_vision /
MaxText style). The batch is sharded over ('data', 'fsdp'). Multi-host: every process builds the same
global mesh, feeds only the rows its devices hold (`host_rows`) and JAX assembles the global array.
"""
from __future__ import annotations

import math
import re
import socket
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from animatediff_jax.errors import UsageError
from animatediff_jax.host_port import split_host_port

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# Leaves smaller than this stay replicated: sharding biases and norms costs more than it saves.
MIN_FSDP_SIZE = 2 ** 12
# Megatron-style split of attention heads over 'tensor' (no-ops when the tensor axis has size 1).
TENSOR_RULES: tuple[tuple[str, tuple], ...] = (
    (r"(attn\d|attention_blocks_\d)/to_[qkv]/kernel$", (None, "tensor")),
    (r"(attn\d|attention_blocks_\d)/to_out_0/kernel$", ("tensor", None)),
    (r"ff/net_0/proj/kernel$", (None, "tensor")),
    (r"ff/net_2/kernel$", ("tensor", None)),
)


JOIN_TIMEOUT_S = 300  # jax.distributed.initialize's default wait for the other processes


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> None:
    """`jax.distributed.initialize` with explicit arguments, or auto-detected (TPU pods, SLURM, ...).

    Does nothing when no argument is given and `auto` is False (single-host runs). Must run before any
    other JAX call touches the devices. A process other than 0 first waits (saying so) up to
    `JOIN_TIMEOUT_S` for the coordinator to accept connections: JAX itself would abort the process
    (SIGABRT, a C++ stack trace) when it does not. Raises UsageError for incomplete keys, auto-detection
    that finds no cluster, and a coordinator that never answers.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UsageError("distributed: give coordinator_address, num_processes and process_id "
                             f"together (got {explicit}), or none of them with initialize: auto")
        if int(process_id) != 0:
            print(f"process {process_id} of {num_processes}: waiting for the coordinator at {coordinator_address} "
                  f"(up to {JOIN_TIMEOUT_S} s)", flush=True)
            wait_for_coordinator(coordinator_address, JOIN_TIMEOUT_S)
        jax.distributed.initialize(coordinator_address, int(num_processes), int(process_id))
    elif auto:
        try:
            jax.distributed.initialize()
        except ValueError as e:  # "coordinator_address should be defined.": no TPU pod / SLURM / MPI here
            raise UsageError(f"distributed.initialize auto: no cluster found to join ({e}); for one host set "
                             "distributed.initialize=false, elsewhere give distributed.coordinator_address, "
                             "num_processes and process_id") from None


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Return once a TCP connection to `address` ("host:port") succeeds; UsageError naming the address
    when it is malformed or nothing answers within `timeout` seconds."""
    host, port = split_host_port(address, "distributed.coordinator_address")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UsageError(f"distributed.coordinator_address {address}: nothing answered in {timeout:g} s "
                                 f"({e.strerror or e}); start process 0 (the coordinator), or check the address "
                                 "and that its port is open") from None
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


def mesh_shape(data: int = -1, fsdp: int = 1, tensor: int = 1, num_devices: int | None = None
               ) -> tuple[int, int, int]:
    """Resolve one `-1` axis so the product equals the device count; clear error otherwise."""
    n = jax.device_count() if num_devices is None else num_devices
    sizes = [int(data), int(fsdp), int(tensor)]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UsageError(f"mesh {dict(zip(AXES, sizes))}: sizes must be positive, with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise UsageError(f"mesh {dict(zip(AXES, sizes))} does not divide the {n} devices "
                             f"({known} does not divide {n})")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) != n:
        raise UsageError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"but there are {n}")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """Mesh with axes ('data', 'fsdp', 'tensor') over all (global) devices, topology-aware on TPU."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES)


def _path_str(path) -> str:
    """'/'-joined names of a `jax.tree_util` key path (dict keys, attributes, indices)."""
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
    return "/".join(out)


def partition_spec(path: str, shape: Sequence[int], mesh: Mesh,
                   rules: Sequence[tuple[str, Sequence]] = ()) -> P:
    """PartitionSpec of one array: first matching rule (user rules, then TENSOR_RULES), axes that do
    not divide their dimension dropped, then 'fsdp' on the largest free dimension it divides."""
    spec: list[Any] = [None] * len(shape)
    for pattern, rule in list(rules) + list(TENSOR_RULES):
        if re.search(pattern, path) and len(rule) == len(shape):
            spec = list(rule)
            break
    for i, axis in enumerate(spec):
        names = axis if isinstance(axis, (tuple, list)) else (axis,)
        if axis is not None and shape[i] % math.prod(mesh.shape[a] for a in names):
            spec[i] = None
    used = {a for s in spec if s is not None for a in (s if isinstance(s, (tuple, list)) else (s,))}
    fsdp = mesh.shape["fsdp"]
    if "fsdp" not in used and fsdp > 1 and math.prod(shape) >= MIN_FSDP_SIZE:
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % fsdp == 0]
        if free:
            spec[max(free, key=lambda i: (shape[i], -i))] = "fsdp"
    return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Sequence]] = ()) -> Any:
    """NamedSharding for every array leaf of `tree` (params, optimizer state, abstract shapes).

    Optimizer-state leaves carry their parameter's path as a suffix, so they land exactly like it.
    """
    def one(path, leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, partition_spec(_path_str(path), shape, mesh, rules))
    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over ('data', 'fsdp'); everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(global_batch: int, mesh: Mesh, micro_batches: int = 1) -> None:
    """The global batch must split evenly over the batch shards and, per shard, into micro-batches."""
    shards = batch_shards(mesh)
    if global_batch % shards:
        raise UsageError(f"train_batch_size {global_batch} does not divide over the mesh's "
                         f"data×fsdp = {shards} batch shards")
    if (global_batch // shards) % micro_batches:
        raise UsageError(f"train_batch_size {global_batch} over {shards} batch shards gives "
                         f"{global_batch // shards} per shard, which gradient_accumulation_steps="
                         f"{micro_batches} does not divide")


def host_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """[start, stop) rows of the global batch that this process's devices hold (must be contiguous)."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_batch,)).values():
        rows.update(range(*index[0].indices(global_batch)))
    start, stop = min(rows), max(rows) + 1
    if len(rows) != stop - start:
        raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows; "
                         "build the mesh with make_mesh so each host owns a contiguous block")
    return start, stop


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding, global_batch_size: int
                 ) -> dict[str, jax.Array]:
    """Assemble this process's rows (`host_rows`) of every field into global sharded arrays."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v),
                                                      (global_batch_size,) + np.shape(v)[1:])
            for k, v in local.items()}
