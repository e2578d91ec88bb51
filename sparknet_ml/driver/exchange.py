"""How states and weights travel between the driver and the tasks.

A fit's states take one of two routes. By default the driver's :class:`StateServer`: the
driver's Python process serves each job's start state and receives the tasks' states over TCP, in
:mod:`~sparknet_ml.tasks.transport`'s format (each task authenticated by challenge and
response with a key derived from the fit's random key and its partition, and allowed to put
only its own partition's state; sealed with AES-GCM when Spark's own traffic is encrypted;
no pickle), so states never enter a JVM and the task functions stay the same for every job
of a fit (they ask the server which rounds to run). The server listens on
``spark.driver.host``, where executors already reach the driver (on Spark Connect, the
client's address). With ``spark.sparknet.stateServer=false`` (a Spark Connect client the
executors cannot reach), :class:`CarriedStates`: nothing connects to the client; each job's
start state goes inside the task function or as a file shipped with the session's artifacts,
and the tasks' states come back in the job's result rows (:class:`~..tasks.states.Carried`).

Weights to score or validate with go inside the task function, or as a shipped file where a
Spark Connect plan could not carry them (:func:`share_weights`).
"""
from __future__ import annotations

import socketserver
import threading
import time
import uuid

import numpy as np

from ..engine.caches import BoundedCache
from ..engine.state import SolverState, flatten, state_size
from ..tasks.states import (FINAL, Carried, Inline, Job, Served, Shipped, read_states,
                             task_key, weights_message)
from ..tasks.transport import (CONNECT_TIMEOUT, HELLO_TIMEOUT, PeerError, admit, new_key,
                               receive, send)

PLAN_SHARE = 0.5  # of the largest message a Spark Connect server takes (a plan)
MAX_PENDING = 64  # connections authenticating at once; more are closed unanswered


MAX_SHIPPED = 256
"""(Spark Connect session, file) pairs remembered as shipped: a file forgotten is shipped
again, which Spark takes as a no-op for the same name and content."""
_SHIPPED = BoundedCache(MAX_SHIPPED)


def share_weights(spark, weights: dict, key: str):
    """Weights (``{layer: [blobs]}``, whose :func:`~sparknet_ml.engine.scoring.weights_key` is
    ``key``) as tasks reach them: inside the task function, or, on
    Spark Connect when they are over :data:`PLAN_SHARE` of the largest plan the server takes,
    in a file shipped once per session with ``SparkSession.addArtifacts(..., file=True)``.

    Returns
    -------
    Inline or Shipped
    """
    return _share(spark, weights, sum(b.nbytes for bs in weights.values() for b in bs),
                  f"sparknet-weights-{key}.bin", lambda: weights_message(weights))


def share_model(spark, model: bytes, key: str):
    """An exported ONNX model's bytes (named ``key``) as tasks reach them, by the routes of
    :func:`share_weights`.

    Returns
    -------
    Inline or Shipped
    """
    return _share(spark, model, len(model), f"sparknet-model-{key}.onnx", lambda: model,
                  raw=True)


def _share(spark, value, size: int, name: str, content, raw: bool = False):
    """``value`` inline while ``size`` bytes fit in a plan, else the file ``name`` holding
    ``content()`` (bytes) shipped once per session."""
    from . import session
    plan = session.plan_bytes(spark)
    if plan is None or size <= plan * PLAN_SHARE:
        return Inline(value)
    _SHIPPED.get_or_make((spark.session_id, name), lambda: _ship(spark, name, content()))
    return Shipped(name, raw)


def _ship(spark, name: str, data: bytes) -> bool:
    """Ship ``data`` to every executor of ``spark`` (a Spark Connect session) as the file
    ``name``; True once done."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        spark.addArtifacts(path, file=True)
    return True


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server
        try:
            try:
                conn, task = admit(self.request, server.key_for, HELLO_TIMEOUT,
                                   server.encrypt)
            finally:
                server.pending.release()  # the cap counts connections not yet authenticated
            with conn:
                self.serve(server, conn, int(task["partition"]))
        except (OSError, ValueError, TypeError, KeyError):  # a stranger, a broken task: close
            return

    @staticmethod
    def serve(server: "_Server", conn, partition: int) -> None:
        """Answer one request of the task of ``partition``."""
        request, _ = receive(conn, timeout=HELLO_TIMEOUT)
        job = server.job
        if job is None:
            send(conn, {"error": "no SparkNet job is running"})
        elif "get" in request:
            if request["get"] == job.id:
                send(conn, {"job": job.id})
            else:
                send(conn, {"job": job.id, "first": job.first, "stop": job.stop,
                            "weights": job.weights}, [job.state])
        elif request.get("job") != job.id:
            send(conn, {"error": f"job {request.get('job')!r} is over"})
        elif "meet" in request:
            if int(request["meet"]["rank"]) != partition:
                raise PeerError(f"the task of partition {partition} met as another rank")
            send(conn, server.meet(job, request["meet"]))
        elif "put" in request:
            name = FINAL if request["put"] == FINAL else str(partition)
            if name == FINAL and partition != 0:
                raise PeerError(f"the task of partition {partition} sent a final state")
            send(conn, {"ready": True})
            _, (flat,) = receive(conn, limit=4 * server.size)
            if flat.size != server.size:
                raise PeerError(f"a state of {flat.size} values for one of {server.size}")
            server.states[(job.id, name)] = flat
            send(conn, {"stored": name})


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, size: int, encrypt: bool):
        super().__init__((host, 0), _Handler)
        self.key = new_key()
        self.size = size
        self.encrypt = encrypt
        self.job: Job | None = None
        self.states: dict[tuple[str, str], np.ndarray] = {}
        self.pending = threading.BoundedSemaphore(MAX_PENDING)
        self.addresses: dict[int, list] = {}  # the current barrier job's tasks, by rank
        self.met = threading.Condition()

    def key_for(self, identity: dict) -> str | None:
        """The key a task that says it is ``identity`` must hold."""
        partition = identity.get("partition")
        return task_key(self.key, partition) if isinstance(partition, int) else None

    def process_request(self, request, client_address) -> None:
        if not self.pending.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def meet(self, job: Job, task: dict) -> dict:
        """A barrier task's listening address in, every task's out once all ``world`` of
        ``job``'s tasks have given theirs (Spark's own ``allGather`` polls once a second)."""
        rank, world, (host, port) = int(task["rank"]), int(task["world"]), task["address"]
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of {world}")
        with self.met:
            self.addresses[rank] = [str(host), int(port)]
            self.met.notify_all()
            if not self.met.wait_for(lambda: len(self.addresses) >= world or self.job is not job,
                                     timeout=CONNECT_TIMEOUT):
                return {"error": f"{len(self.addresses)} of the job's {world} tasks arrived "
                                 f"within {CONNECT_TIMEOUT:.0f} s"}
            if self.job is not job:
                return {"error": f"job {job.id!r} is over"}
            return {"addresses": [self.addresses[k] for k in range(world)]}


class StateServer:
    """Serves each job's start state and takes the tasks' states back (see module doc).

    Parameters
    ----------
    host : str
        The driver's address as executors reach it (``spark.driver.host``).
    like : SolverState
        A state of the fit: every state it serves or takes has this many values.
    encrypt : bool
        Seal every connection (and the barrier tasks' mesh) with AES-GCM.
    """

    def __init__(self, host: str, like: SolverState, encrypt: bool = False):
        self.sharing_seconds = 0.0
        self._server = _Server(host, state_size(like), encrypt)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sparknet_ml state server")
        self._thread.start()
        host, port = self._server.server_address[:2]
        self._served = Served(host, port, self._server.key, self._server.size, encrypt)

    @property
    def served(self) -> Served:
        """Where tasks reach this server (one object for the fit: it goes into the task
        function, built once)."""
        return self._served

    def start_job(self, state: SolverState, first: int, stop: int) -> Job:
        """Serve ``state`` as the start of rounds ``first`` to ``stop - 1`` (the time it
        took is :attr:`sharing_seconds`)."""
        started = time.perf_counter()
        job = Job(uuid.uuid4().hex, first, stop, sum(w.size for w in state.weights),
                  flatten(state))
        with self._server.met:
            self._server.states.clear()
            self._server.addresses.clear()
            self._server.job = job
            self._server.met.notify_all()
        self.sharing_seconds = time.perf_counter() - started
        return job

    def receive(self, job: Job, table) -> None:
        """Nothing: ``job``'s tasks sent their states to the server, not in its rows
        ``table``."""

    def take(self, job: Job, name: str) -> np.ndarray | None:
        """The state vector the task of partition ``name`` (a string), or the barrier job's
        partition 0 as :data:`~sparknet_ml.tasks.states.FINAL`, sent in ``job`` (None when
        it sent none)."""
        return self._server.states.pop((job.id, name), None)

    def end_job(self) -> None:
        """Forget the job's start state and anything its tasks sent."""
        with self._server.met:
            self._server.job = None
            self._server.states.clear()
            self._server.addresses.clear()
            self._server.met.notify_all()

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class CarriedStates:
    """The route of a fit whose executors do not connect to this process (see module doc);
    the interface of :class:`StateServer`.

    Parameters
    ----------
    spark : SparkSession
        The session whose artifacts carry start states too large for a plan.
    like : SolverState
        A state of the fit.
    encrypt : bool
        Seal the barrier tasks' mesh with AES-GCM.
    """

    def __init__(self, spark, like: SolverState, encrypt: bool = False):
        self.sharing_seconds = 0.0
        self._spark, self._size, self._encrypt = spark, state_size(like), encrypt
        self._key = new_key()
        self._job: Job | None = None
        self._carried: Carried | None = None
        self._states: dict[str, np.ndarray] = {}

    @property
    def served(self) -> Carried:
        """The current job as its tasks get it (it goes into each job's task function)."""
        return self._carried

    def start_job(self, state: SolverState, first: int, stop: int) -> Job:
        """Share ``state`` as the start of rounds ``first`` to ``stop - 1``: inside the task
        function, or shipped in a file (the time it took is :attr:`sharing_seconds`)."""
        started = time.perf_counter()
        vector = flatten(state)
        job = Job(uuid.uuid4().hex, first, stop, sum(w.size for w in state.weights), vector)
        shared = _share(self._spark, vector, vector.nbytes, f"sparknet-state-{job.id}.bin",
                        vector.tobytes, raw=True)
        self._job, self._states = job, {}
        self._carried = Carried(job.id, first, stop, job.weights, shared, self._key,
                                self._size, self._encrypt)
        self.sharing_seconds = time.perf_counter() - started
        return job

    def receive(self, job: Job, table) -> None:
        """Take the states that ``job``'s result rows ``table`` carry."""
        self._states.update(read_states(table, job))

    def take(self, job: Job, name: str) -> np.ndarray | None:
        """As :meth:`StateServer.take`, from what :meth:`receive` took."""
        found = self._states.pop(name, None) if job is self._job else None
        if found is not None and found.size != self._size:
            raise RuntimeError(f"a state of {found.size} values for one of {self._size}")
        return found

    def end_job(self) -> None:
        """Forget the job and its states (a shipped start state stays among the session's
        artifacts until the session ends)."""
        self._job, self._carried, self._states = None, None, {}

    def close(self) -> None:
        """Nothing to close: no socket was opened."""
