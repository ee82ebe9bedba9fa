"""Training over several processes and hosts with MPI (optional: ``pip install 'odin[mpi]'``).

* :mod:`odin.distributed.world`   — the ranks of a run, heartbeats, messages with deadlines
* :mod:`odin.distributed.spheres` — the spheres trainer with its slots spread over the ranks
* :mod:`odin.distributed.run`     — ``mpirun -np N odin train``: rank 0 plans, the others follow
"""
from odin.distributed.world import MPIError, PeerLost, World, launched_size, mpi_status, world

__all__ = ["MPIError", "PeerLost", "World", "launched_size", "mpi_status", "world"]
