"""The in-job averaging of multi-round jobs (reduce-scatter + all-gather over a mesh), over
real loopback sockets (one thread per task)."""
import socket
import struct
import threading

import numpy as np
import pytest

from sparknet_ml.tasks import averaging
from sparknet_ml.tasks.averaging import Averager
from sparknet_ml.tasks.wire import recv_message
from sparknet_ml.driver.rounds import job_end
from sparknet_ml.engine.state import RoundResult, SolverState
from sparknet_ml.engine.worker import average_results

SECRET = "0123456789abcdef"
LIKE = SolverState([np.zeros((4, 3), np.float32), np.zeros(3, np.float32)],
                   [np.zeros((4, 3), np.float32)])


def result(partition, samples, seed):
    if samples == 0:
        return RoundResult(None, 0, 0.0, partition)
    rng = np.random.default_rng(seed)
    state = SolverState([rng.standard_normal((4, 3)).astype(np.float32),
                         rng.standard_normal(3).astype(np.float32)],
                        [rng.standard_normal((4, 3)).astype(np.float32)])
    return RoundResult(state, samples, float(rng.random()), partition, 0.5 + partition)


def run_tasks(results, rounds=1, secrets=None, timeout=10.0, fail=None):
    """Each result's task (rank = its place in ``results``) averages ``rounds`` times; returns
    what every task got, by partition, and the errors raised. ``fail``: a rank that closes its
    connections after the reduce-scatter of round 1, as a task dying mid-average would."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in results]
    addresses = [listener.getsockname()[:2] for listener in listeners]
    secrets = secrets or [SECRET] * len(results)
    got, errors = {}, []

    def task(rank, r):
        try:
            with Averager.connect(rank, listeners[rank], addresses, secrets[rank],
                                  timeout) as averager:
                if rank == fail:
                    averager._exchange({other: ({"partition": r.partition, "samples": 0,
                                                 "loss": 0.0, "seconds": 0.0}, [])
                                        for other in averager._peers})
                    raise ConnectionAbortedError("this task died mid-average")
                got[r.partition] = [averager.average(r, LIKE) for _ in range(rounds)]
        except Exception as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=task, args=(rank, r)) for rank, r in enumerate(results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got, errors


@pytest.mark.parametrize("samples", [[640], [640, 320], [640, 0, 320], [0, 640, 320, 0, 64]])
def test_every_task_gets_the_drivers_average_bit_for_bit(samples):
    """1, 2, 3 and 5 tasks, empty ones among them, ranks not in partition order."""
    results = [result(p, n, p + 1) for p, n in enumerate(samples)][::-1]
    got, errors = run_tasks(results, rounds=2)
    assert not errors
    state, total, loss = average_results(sorted(results, key=lambda r: r.partition))
    for partition in range(len(samples)):
        for averaged in got[partition]:
            assert averaged.samples == total == sum(samples) and averaged.loss == loss
            for mine, expected in zip(averaged.state.weights + averaged.state.history,
                                      state.weights + state.history):
                assert mine.dtype == np.float32 and mine.shape == expected.shape
                np.testing.assert_array_equal(mine, expected)
            assert [(r.partition, r.samples) for r in averaged.results] == list(
                enumerate(samples))
            assert all(r.state is None for r in averaged.results)


def test_each_task_moves_about_twice_the_state_whatever_the_number_of_tasks(monkeypatch):
    sent, lock = [], threading.Lock()
    send = averaging.send_message

    def counting(sock, header, arrays=()):
        with lock:
            sent.append(sum(a.nbytes for a in arrays))
        send(sock, header, arrays)
    monkeypatch.setattr(averaging, "send_message", counting)
    state_bytes = sum(a.nbytes for a in LIKE.weights + LIKE.history)
    for world in (2, 4):
        sent.clear()
        run_tasks([result(p, 64, p) for p in range(world)])
        per_task = sum(sent) / world
        assert per_task == pytest.approx(2 * (world - 1) / world * state_bytes, rel=0.15)


def test_a_task_dying_mid_average_fails_every_task():
    got, errors = run_tasks([result(p, 64, p) for p in range(3)], fail=1)
    assert len(errors) == 3 and not got
    assert any(isinstance(e, ConnectionAbortedError) for e in errors)
    assert sum(isinstance(e, ConnectionError) for e in errors) == 3


@pytest.mark.parametrize("hello", [b"GET / HTTP/1.0\r\n\r\n", struct.pack("<Q", 2) + b"[]",
                                   struct.pack("<Q", 32) + b'{"secret": "0123456789abcdef"}  '])
def test_a_connection_without_the_secret_and_a_rank_is_dropped_and_does_not_count(hello):
    listener = socket.create_server(("127.0.0.1", 0))
    stranger = socket.create_connection(listener.getsockname()[:2])
    stranger.sendall(hello)
    with pytest.raises(TimeoutError, match="1 of this SparkNet job's 2 tasks connected"):
        Averager.connect(0, listener, [listener.getsockname()[:2], ("127.0.0.1", 1)], SECRET,
                         timeout=1.0)
    try:  # closed by the task: an end of stream, or a reset as it left bytes unread
        assert stranger.recv(1) == b""
    except ConnectionResetError:
        pass
    stranger.close()


def test_arrays_announced_before_the_secret_are_refused_unallocated():
    mine, theirs = socket.socketpair()
    header = b'{"shapes": [[1000000000000]]}'  # 4 TB of float32
    theirs.sendall(struct.pack("<Q", len(header)) + header)
    mine.settimeout(1.0)
    with pytest.raises(ConnectionError, match="arrays before the job's secret"):
        recv_message(mine, arrays_allowed=False)
    mine.close(), theirs.close()


def test_a_wrong_secret_is_refused():
    got, errors = run_tasks([result(0, 64, 1), result(1, 64, 2)], secrets=[SECRET, "wrong"],
                            timeout=1.0)
    assert any(isinstance(e, TimeoutError) for e in errors)
    assert any(isinstance(e, ConnectionError) for e in errors)  # the peer's socket was closed


def test_no_data_anywhere_fails_every_task_with_the_same_error():
    got, errors = run_tasks([result(0, 0, 1), result(1, 0, 2)])
    assert len(errors) == 2
    assert {str(e) for e in errors} == {"no partition saw any data this round"}


@pytest.mark.parametrize("start, rounds, per_job, holds, expected", [
    (0, 10, 1, (), 1), (0, 10, 4, (), 4), (8, 10, 4, (), 10), (0, 10, 4, (3,), 3),
    (3, 10, 4, (3,), 6), (5, 12, 10, (5, 4), 8), (0, 10, 100, (), 10)])
def test_a_job_ends_on_every_hold_interval(start, rounds, per_job, holds, expected):
    assert job_end(start, rounds, per_job, holds) == expected
