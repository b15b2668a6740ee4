"""Data parallelism over a one-axis `data` mesh, and multi-host initialisation.

Params and optimizer state are replicated; each batch is split along its first axis over
all devices of all hosts. Each host feeds its own rows of the global batch.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize()` (TPU pods autodetect; CUDA hosts pass the three args)."""
    kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address,
                                     num_processes=num_processes,
                                     process_id=process_id).items() if v not in (None, "", -1)}
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d global devices", jax.process_index(),
             jax.process_count(), jax.device_count())


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A mesh with one `data` axis over the first `num_devices` devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if not num_devices else num_devices
    if n > len(devices):
        raise ValueError(f"asked for {n} devices but only {len(devices)} are available")
    return Mesh(np.asarray(devices[:n]), ("data",))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by the {n} devices of "
                         "the data mesh; choose a multiple")


def shard_batch(batch, mesh: Mesh):
    """A host-side numpy batch (the global batch; each host keeps its own rows) -> global
    jax arrays sharded along `data`."""
    sharding = NamedSharding(mesh, P("data"))
    n_proc, pid = jax.process_count(), jax.process_index()

    def put(x):
        if x is None:
            return None
        x = np.asarray(x)
        check_batch_size(x.shape[0], mesh)
        local = x.shape[0] // n_proc
        return jax.make_array_from_process_local_data(sharding, x[pid * local:(pid + 1) * local],
                                                      x.shape)

    return jax.tree.map(put, batch, is_leaf=lambda x: x is None)
