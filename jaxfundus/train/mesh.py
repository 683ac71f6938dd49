"""Devices and processes: the data-parallel mesh, batch placement and multi-host gathering."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process run (call before any other JAX use).

    CPU devices need gloo collectives across processes; the setting only affects the CPU
    backend, so it is harmless on GPU/TPU hosts.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


class DataParallel:
    """A 1-D mesh over every device of every process: batch sharded on `data`, state replicated."""

    def __init__(self) -> None:
        # Auto axes: XLA propagates shardings through the model, so model code stays sharding-free.
        self.mesh = jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                                  axis_types=(AxisType.Auto,))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch = NamedSharding(self.mesh, P(DATA_AXIS))
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()

    @property
    def is_primary(self) -> bool:
        """Process 0 writes the run's files; every process computes."""
        return self.process_index == 0

    def barrier(self, name: str) -> None:
        """Wait until every process reaches this point (no-op with one process)."""
        if self.process_count > 1:
            multihost_utils.sync_global_devices(name)

    @property
    def n_devices(self) -> int:
        return jax.device_count()

    def describe(self) -> str:
        platform = jax.devices()[0].platform.upper()
        text = f"data-parallel over {self.n_devices} {platform} device(s)"
        if self.process_count > 1:
            text += f" in {self.process_count} processes"
        return text

    def check_batch(self, global_batch: int) -> None:
        if global_batch % self.n_devices:
            raise ValueError(
                f"batch size {global_batch} is not divisible by {self.n_devices} devices"
            )

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of a global batch -> global arrays sharded on `data`."""
        return {k: jax.make_array_from_process_local_data(self.batch, np.asarray(v))
                for k, v in local_batch.items()}

    def gather(self, tree) -> dict[str, np.ndarray]:
        """Global (sharded) arrays -> full numpy arrays on every process."""
        if self.process_count == 1:
            return jax.tree.map(np.asarray, tree)
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
