"""The processes of a run started by `mpirun`, and the few messages the spheres exchange.

MPI is optional: nothing here imports mpi4py unless the process was started by an MPI
launcher with more than one rank (its environment says so), so `odin` runs and imports
without it. Every wait is a poll with a deadline on the peer's heartbeat, never a blocking
MPI call: a rank that was killed is reported by mpirun, but one whose host is lost (or that
hangs) would leave a blocking call waiting forever. A heartbeat thread tells a rank that is
busy (rank 0 evaluating, building data) from one that is gone.
"""
from __future__ import annotations

import atexit
import os
import pickle
import shutil
import sys
import threading
import time
from typing import Any, Optional

import numpy as np

# launchers' environment variables for the world size (OpenMPI, MPICH/Hydra, PMIx, Slurm's PMI)
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
HEARTBEAT_S = 1.0
DEFAULT_TIMEOUT_S = 60.0  # a rank silent this long is lost (ODIN_MPI_TIMEOUT overrides)
TAG_OBJECT, TAG_HEARTBEAT = 1, 2


class MPIError(RuntimeError):
    """A run over several processes cannot go on (one line for the user)."""


class PeerLost(MPIError):
    """A rank stopped answering (killed, hung, or its host lost)."""

    def __init__(self, rank: int, silent_s: float, waiting_for: str) -> None:
        super().__init__(f"rank {rank} has not answered for {silent_s:.0f} s (killed, hung or its host lost) "
                         f"while waiting for {waiting_for}; stopping every rank")
        self.rank = rank


def launched_size() -> int:
    """How many ranks the launcher started (1 when not started by one)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher says (0 when not started by one)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def mpi_status() -> str:
    """One line for `odin info`: whether runs can span processes."""
    try:
        import mpi4py
    except ImportError:
        return "not available (pip install 'odin[mpi]' with an MPI library, e.g. apt install openmpi-bin libopenmpi-dev)"
    mpi4py.rc.initialize = False  # asking for the library's name must not start MPI
    mpi4py.rc.finalize = False
    try:
        from mpi4py import MPI
        library = MPI.Get_library_version().split("\0")[0].split(",")[0].strip()
    except Exception as exc:  # mpi4py without a loadable MPI library
        return f"mpi4py {mpi4py.__version__} is installed but its MPI library does not load ({exc})"
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    where = f"mpirun: {launcher}" if launcher else "no mpirun on PATH"
    return f"available: mpi4py {mpi4py.__version__}, {library}, {where}"


def timeout_s() -> float:
    raw = os.environ.get("ODIN_MPI_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 2.0 <= value <= 86400.0:
        raise MPIError(f"ODIN_MPI_TIMEOUT must be seconds in [2, 86400], got {raw!r}")
    return value


class World:
    """This process's place among the ranks of one run, over a private communicator."""

    def __init__(self, comm: Any, mpi: Any) -> None:
        self.MPI = mpi
        self.comm = comm.Dup()
        self.beats = comm.Dup()  # heartbeats never mix with the step's messages
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout_s()
        self.bytes_sent = 0  # gradient bytes this rank put on the wire (chain sends, its share of broadcasts)
        self._seen = [time.monotonic()] * self.size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="odin-mpi-heartbeat", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ liveness
    def _heartbeat(self) -> None:
        MPI, peers = self.MPI, [r for r in range(self.size) if r != self.rank]
        out = np.zeros(1, np.int32)
        incoming = np.zeros(1, np.int32)
        sending: dict[int, Any] = {}
        status = MPI.Status()
        receive = self.beats.Irecv(incoming, source=MPI.ANY_SOURCE, tag=TAG_HEARTBEAT)
        last_beat = 0.0
        try:
            while not self._stop.is_set():
                while receive.Test(status):
                    self._seen[status.Get_source()] = time.monotonic()
                    receive = self.beats.Irecv(incoming, source=MPI.ANY_SOURCE, tag=TAG_HEARTBEAT)
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_S:
                    last_beat = now
                    for peer in peers:  # never pile up sends to a peer that does not take them
                        if peer not in sending or sending[peer].Test():
                            sending[peer] = self.beats.Isend(out, dest=peer, tag=TAG_HEARTBEAT)
                time.sleep(0.05)
        finally:
            receive.Cancel()
            receive.Wait()  # the cancellation completes: nothing pending when MPI finalizes

    def _check_alive(self, peer: int, waiting_for: str) -> None:
        silent = time.monotonic() - self._seen[peer]
        if silent > self.timeout:
            raise PeerLost(peer, silent, waiting_for)

    def wait(self, requests: list, peers: list[int], waiting_for: str) -> None:
        """Complete `requests`, polling; a peer silent beyond the timeout raises PeerLost."""
        pause = 1e-5
        while not self.MPI.Request.Testall(requests):
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)
            for peer in peers:
                self._check_alive(peer, waiting_for)

    # ------------------------------------------------------------ messages
    def _objects(self, value: Any, senders: list[int], receivers: list[int], what: str) -> dict[int, Any]:
        """Send `value` (pickled) to `receivers` and take one object from each of `senders`: its
        size, then its bytes (a pair's messages arrive in the order they were sent)."""
        payload = bytearray(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        sizes = {r: np.zeros(1, np.int64) for r in senders}
        size = np.array([len(payload)], np.int64)
        peers = sorted(set(senders) | set(receivers))
        requests = [self.comm.Isend(size, dest=r, tag=TAG_OBJECT) for r in receivers]
        requests += [self.comm.Irecv(sizes[r], source=r, tag=TAG_OBJECT) for r in senders]
        self.wait(requests, peers, what)
        buffers = {r: bytearray(int(sizes[r][0])) for r in senders}
        requests = [self.comm.Isend(payload, dest=r, tag=TAG_OBJECT) for r in receivers]
        requests += [self.comm.Irecv(buffers[r], source=r, tag=TAG_OBJECT) for r in senders]
        self.wait(requests, peers, what)
        return {r: pickle.loads(bytes(buffers[r])) for r in senders}

    def exchange(self, value: Any, what: str) -> list[Any]:
        """Every rank's `value` (a small picklable object), in rank order."""
        peers = [r for r in range(self.size) if r != self.rank]
        got = self._objects(value, peers, peers, what)
        return [value if r == self.rank else got[r] for r in range(self.size)]

    def broadcast(self, value: Any, root: int, what: str) -> Any:
        """Root's `value` on every rank (plans, settings, the pipeline's batches): sent by the
        root alone."""
        if self.rank == root:
            self._objects(value, [], [r for r in range(self.size) if r != root], what)
            return value
        return self._objects(None, [root], [], what)[root]

    def broadcast_array(self, array: np.ndarray, root: int, what: str) -> None:
        """Root's contents of the contiguous `array` into every rank's (in place)."""
        requests = [self.comm.Ibcast(part, root=root) for part in _pieces(array)]
        # any rank may be a link of the broadcast's tree: every other one is watched
        self.wait(requests, [r for r in range(self.size) if r != self.rank], what)
        if self.rank == root:  # (size - 1) copies cross the wire, however MPI routes them: counted at the root
            self.bytes_sent += array.nbytes * (self.size - 1)

    def send_array(self, array: np.ndarray, dest: int, tag: int) -> Any:
        self.bytes_sent += array.nbytes
        return self.comm.Isend(array, dest=dest, tag=100 + tag)

    def receive_array(self, array: np.ndarray, source: int, tag: int, what: str) -> None:
        self.wait([self.comm.Irecv(array, source=source, tag=100 + tag)], [source], what)

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)

    def abort(self, code: int) -> None:
        """End every rank now (a lost peer cannot take part in a clean exit)."""
        sys.stderr.flush()
        self.comm.Abort(code)


def _pieces(array: np.ndarray, floats: int = 1 << 24) -> list[np.ndarray]:
    """Views of at most 64 MiB: MPI counts are C ints."""
    flat = array.reshape(-1)
    return [flat[i:i + floats] for i in range(0, flat.size, floats)] or [flat]


_world: Optional[World] = None


def current() -> Optional[World]:
    """The World made by world() so far (None: a one-process run, or not made yet)."""
    return _world


def world() -> Optional[World]:
    """The run's World when started by mpirun with two or more ranks, else None."""
    global _world
    if _world is not None or launched_size() < 2:
        return _world
    try:
        import mpi4py
    except ImportError:
        raise MPIError(f"started by an MPI launcher with {launched_size()} ranks, but mpi4py is not "
                           f"installed: pip install 'odin[mpi]'") from None
    mpi4py.rc.thread_level = "multiple"  # the heartbeat thread talks while the main thread waits
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        raise MPIError("the MPI library does not support threads (MPI_THREAD_MULTIPLE), which odin's "
                           "heartbeat needs")
    _world = World(MPI.COMM_WORLD, MPI)
    # before mpi4py's own exit handler (registered at its import, so run after this one):
    # the heartbeat thread must be quiet when MPI finalizes
    atexit.register(_world.close)
    return _world
