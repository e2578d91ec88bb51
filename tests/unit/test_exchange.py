"""States between driver and tasks: the driver's state server and the one transport, over
real loopback sockets."""
import socket
import struct

import numpy as np
import pytest

from sparknet_ml.driver.exchange import StateServer
from sparknet_ml.engine.state import SolverState, flatten
from sparknet_ml.tasks import transport
from sparknet_ml.tasks.states import _FETCHED


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
    fetched = served.job()
    assert (fetched.id, fetched.first, fetched.stop, fetched.weights) == (job.id, 3, 7, 17)
    np.testing.assert_array_equal(fetched.state, flatten(state(0)))
    assert served.job() is fetched  # fetched once per Python worker and job
    served.send(fetched, "1", flatten(state(1)))
    np.testing.assert_array_equal(server.take(job, "1"), flatten(state(1)))
    assert server.take(job, "0") is None
    later = server.start_job(state(2), 7, 8)
    with pytest.raises(RuntimeError, match="is over"):  # a task of a finished job
        served.send(fetched, "0", flatten(state(1)))
    assert served.job().id == later.id
    server.end_job()
    with pytest.raises(RuntimeError, match="no SparkNet job is running"):
        served.job()


def test_a_state_of_another_size_is_refused_unstored(server):
    job = server.start_job(state(0), 0, 1)
    served = server.served
    with transport.connect((served.host, served.port), served.key, {"role": "task"}) as sock:
        transport.send(sock, {"put": "0", "job": job.id})
        assert transport.receive(sock, timeout=5.0)[0] == {"ready": True}
        transport.send(sock, {}, [np.zeros(served.size + 1, np.float32)])
        with pytest.raises(ConnectionError):
            transport.receive(sock, timeout=5.0)  # closed without a receipt
    assert server.take(job, "0") is None


def test_a_stranger_without_the_key_gets_nothing(server):
    server.start_job(state(0), 0, 1)
    served = server.served
    with pytest.raises(ConnectionError):
        transport.connect((served.host, served.port), "0" * 64, {"role": "task"}, 5.0)
    # what a stranger learns: a nonce, then a closed connection
    with socket.create_connection((served.host, served.port), timeout=5.0) as sock:
        challenge, _ = transport.receive(sock, timeout=5.0)
        assert set(challenge) == {"nonce"}
        transport.send(sock, {"nonce": "n", "identity": {}, "mac": "0" * 64})
        with pytest.raises(ConnectionError):
            transport.receive(sock, timeout=5.0)


def test_a_slow_stranger_is_cut_at_the_hello_deadline():
    mine, theirs = socket.socketpair()
    theirs.sendall(struct.pack("<Q", 100)[:3])  # a length begun, never finished
    with pytest.raises(TimeoutError):
        transport.receive(mine, timeout=0.5)
    mine.close(), theirs.close()


def test_a_connection_proves_the_key_both_ways():
    listener = socket.create_server(("127.0.0.1", 0))
    import threading
    got = []

    def accept():
        sock, _ = listener.accept()
        got.append(transport.admit(sock, "secret-key"))
        sock.close()
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
