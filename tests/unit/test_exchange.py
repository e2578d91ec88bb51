"""States between driver and tasks: the driver's state server and the one transport, over
real loopback sockets."""
import socket
import struct

import numpy as np
import pytest

from sparknet_ml.driver.exchange import CarriedStates, StateServer
from sparknet_ml.engine.state import SolverState, flatten
from sparknet_ml.tasks import transport
from sparknet_ml.tasks import states as task_states
from sparknet_ml.tasks.states import FINAL, _FETCHED, read_summaries, summary_rows, task_key


def state(seed):
    rng = np.random.default_rng(seed)
    return SolverState([rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(
        np.float32)], [rng.normal(size=(3, 4)).astype(np.float32)])


@pytest.fixture
def server():
    server = StateServer("127.0.0.1", state(0))
    yield server
    server.close()


def test_the_server_serves_the_jobs_start_and_takes_states_back(server):
    _FETCHED.clear()
    job = server.start_job(state(0), 3, 7)
    served = server.served
    fetched = served.job(1)
    assert (fetched.id, fetched.first, fetched.stop, fetched.weights) == (job.id, 3, 7, 17)
    np.testing.assert_array_equal(fetched.state, flatten(state(0)))
    assert served.job(1) is fetched  # fetched once per Python worker and job
    served.send(fetched, 1, flatten(state(1)))
    np.testing.assert_array_equal(server.take(job, "1"), flatten(state(1)))
    assert server.take(job, "0") is None
    later = server.start_job(state(2), 7, 8)
    with pytest.raises(RuntimeError, match="is over"):  # a task of a finished job
        served.send(fetched, 0, flatten(state(1)))
    assert served.job(0).id == later.id
    server.end_job()
    with pytest.raises(RuntimeError, match="no SparkNet job is running"):
        served.job(0)


def test_a_state_of_another_size_is_refused_unstored(server):
    job = server.start_job(state(0), 0, 1)
    served = server.served
    with transport.connect((served.host, served.port), task_key(served.key, 0),
                           {"partition": 0}) as conn:
        transport.send(conn, {"put": 0, "job": job.id})
        assert transport.receive(conn, timeout=5.0)[0] == {"ready": True}
        transport.send(conn, {}, [np.zeros(served.size + 1, np.float32)])
        with pytest.raises(ConnectionError):
            transport.receive(conn, timeout=5.0)  # closed without a receipt
    assert server.take(job, "0") is None


def test_a_stranger_without_the_key_gets_nothing(server):
    server.start_job(state(0), 0, 1)
    served = server.served
    with pytest.raises(ConnectionError):
        transport.connect((served.host, served.port), "0" * 64, {"partition": 0}, 5.0)
    with pytest.raises(ConnectionError):  # the fit's own key is not a task's
        transport.connect((served.host, served.port), served.key, {"partition": 0}, 5.0)
    # what a stranger learns: a nonce, then a closed connection
    with transport.Connection(socket.create_connection((served.host, served.port),
                                                       timeout=5.0)) as conn:
        challenge, _ = transport.receive(conn, timeout=5.0)
        assert set(challenge) == {"nonce"}
        transport.send(conn, {"nonce": "n", "identity": {}, "mac": "0" * 64})
        with pytest.raises(ConnectionError):
            transport.receive(conn, timeout=5.0)


def test_a_slow_stranger_is_cut_at_the_hello_deadline():
    mine, theirs = socket.socketpair()
    theirs.sendall(struct.pack("<Q", 100)[:3])  # a length begun, never finished
    with pytest.raises(TimeoutError):
        transport.receive(transport.Connection(mine), timeout=0.5)
    mine.close(), theirs.close()


def test_a_connection_proves_the_key_both_ways():
    listener = socket.create_server(("127.0.0.1", 0))
    import threading
    got = []

    def accept():
        sock, _ = listener.accept()
        conn, identity = transport.admit(sock, lambda identity: "secret-key")
        got.append(identity)
        conn.close()
    thread = threading.Thread(target=accept)
    thread.start()
    transport.connect(listener.getsockname()[:2], "secret-key", {"rank": 3}).close()
    thread.join()
    listener.close()
    assert got == [{"rank": 3}]


def test_barrier_tasks_meet_through_the_server_and_a_later_job_releases_them(server):
    import threading
    job = server.start_job(state(0), 0, 3)
    served = server.served
    met = {}
    threads = [threading.Thread(target=lambda r=r: met.__setitem__(
        r, served.meet(job, r, 2, ("127.0.0.1", 5000 + r)))) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert met == {r: [("127.0.0.1", 5000), ("127.0.0.1", 5001)] for r in (0, 1)}
    job = server.start_job(state(0), 0, 3)
    errors = []

    def alone():  # one task of two arrives; the job is rerun under a new id meanwhile
        try:
            served.meet(job, 0, 2, ("127.0.0.1", 5000))
        except RuntimeError as err:
            errors.append(str(err))
    waiting = threading.Thread(target=alone)
    waiting.start()
    import time
    time.sleep(0.3)
    server.start_job(state(0), 0, 3)
    waiting.join(10)
    assert errors and "is over" in errors[0]


def test_a_task_can_put_only_its_own_partitions_state(server):
    """Hardening round 2, item 6: once authenticated, a peer could store a state under
    another task's name. The server names a state by the partition its sender proved."""
    job = server.start_job(state(0), 0, 1)
    served = server.served
    address = (served.host, served.port)
    with transport.connect(address, task_key(served.key, 1), {"partition": 1}) as conn:
        transport.send(conn, {"put": "0", "job": job.id})  # asks to put partition 0's
        assert transport.receive(conn, timeout=5.0)[0] == {"ready": True}
        transport.send(conn, {}, [flatten(state(1))])
        assert transport.receive(conn, timeout=5.0)[0] == {"stored": "1"}
    assert server.take(job, "0") is None
    np.testing.assert_array_equal(server.take(job, "1"), flatten(state(1)))
    # a variant: the final state of a barrier job comes from partition 0 alone
    with transport.connect(address, task_key(served.key, 1), {"partition": 1}) as conn:
        transport.send(conn, {"put": "final", "job": job.id})
        with pytest.raises(ConnectionError):
            transport.receive(conn, timeout=5.0)
    assert server.take(job, "final") is None
    # and partition 1's key does not pass for partition 0
    with pytest.raises(ConnectionError):
        transport.connect(address, task_key(served.key, 1), {"partition": 0}, 5.0)


class RecordingProxy:
    """Relays one loopback port to another, keeping every byte that crosses it."""

    def __init__(self, target):
        import threading
        self.target, self.recorded = target, bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(1 << 16):
                with self._lock:
                    self.recorded += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.mark.parametrize("encrypt", [True, False], ids=["sealed", "plain"])
def test_a_recording_proxy_finds_neither_the_key_nor_any_state(encrypt):
    """Item 6: a stranger who records the traffic of a fit learns no key, and, sealed, no
    state (the plain run shows the test would see a state that crossed in clear)."""
    from dataclasses import replace
    server = StateServer("127.0.0.1", state(0), encrypt=encrypt)
    proxy = RecordingProxy(server._server.server_address[:2])
    try:
        _FETCHED.clear()
        job = server.start_job(state(0), 0, 2)
        served = replace(server.served, host=proxy.address[0], port=proxy.address[1])
        fetched = served.job(0)
        np.testing.assert_array_equal(fetched.state, flatten(state(0)))
        served.send(fetched, 0, flatten(state(1)))
        np.testing.assert_array_equal(server.take(job, "0"), flatten(state(1)))
    finally:
        proxy.close()
        server.close()
    recorded = bytes(proxy.recorded)
    assert len(recorded) > 2 * flatten(state(0)).nbytes
    keys = [served.key, task_key(served.key, 0)]
    assert not any(k.encode() in recorded or bytes.fromhex(k) in recorded for k in keys)
    states = [flatten(state(seed)).tobytes()[:32] for seed in (0, 1)]
    assert [s in recorded for s in states] == [not encrypt] * 2


def test_carried_states_go_in_the_task_function_and_come_back_in_the_jobs_rows(monkeypatch):
    """spark.sparknet.stateServer=false: nothing connects to the driver. The start state
    rides in the task function (a session without a plan limit; a Connect session ships a
    large one as a file, tests/connect), the states come back in chunked rows."""
    import pyarrow as pa
    monkeypatch.setattr(task_states, "STATE_CHUNK", 12)  # bytes: several rows per state
    carried = CarriedStates(object(), state(0))
    job = carried.start_job(state(0), 3, 7)
    served = carried.served
    fetched = served.job(1)
    assert (fetched.id, fetched.first, fetched.stop, fetched.weights) == (job.id, 3, 7, 17)
    np.testing.assert_array_equal(fetched.state, flatten(state(0)))
    rows = [*served.send(fetched, 1, flatten(state(1))), summary_rows(1, {"job": job.id}),
            *served.send(fetched, 0, flatten(state(2)), final=True)]
    assert len(rows) == 2 * -(-flatten(state(1)).nbytes // 12) + 1
    table = pa.Table.from_batches(rows)
    carried.receive(job, table)
    assert read_summaries(table) == {1: {"job": job.id}}
    np.testing.assert_array_equal(carried.take(job, "1"), flatten(state(1)))
    np.testing.assert_array_equal(carried.take(job, FINAL), flatten(state(2)))
    assert carried.take(job, "0") is None
    carried.receive(job, table)
    later = carried.start_job(state(2), 7, 8)
    assert carried.take(job, "1") is None  # a finished job's states are gone
    assert carried.served.id == later.id != job.id
    carried.end_job()
    carried.close()
