"""The in-job averaging of multi-round jobs, over real loopback sockets (one thread per task)."""
import socket
import struct
import threading

import numpy as np
import pytest

from sparknet_ml.distributed.averaging import Averager, recv_message
from sparknet_ml.distributed.rounds import job_end
from sparknet_ml.engine.worker import RoundResult, SolverState, average_results

SECRET = "0123456789abcdef"


def result(partition, samples, seed):
    if samples == 0:
        return RoundResult(None, 0, 0.0, partition)
    rng = np.random.default_rng(seed)
    state = SolverState([rng.standard_normal((4, 3)).astype(np.float32),
                         rng.standard_normal(3).astype(np.float32)],
                        [rng.standard_normal((4, 3)).astype(np.float32)])
    return RoundResult(state, samples, float(rng.random()), partition, 0.5 + partition)


def run_tasks(results, rounds=1, root_secret=SECRET, peer_secret=SECRET, timeout=10.0):
    """Each result's task averages ``rounds`` times; returns what every task got, by partition."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got, errors = {}, []

    def task(r):
        try:
            if r.partition == 0:
                averager = Averager.as_root(listener, len(results), root_secret, timeout)
            else:
                averager = Averager.as_peer("127.0.0.1", port, peer_secret, timeout)
            with averager:
                got[r.partition] = [averager.average(r) for _ in range(rounds)]
        except Exception as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=task, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got, errors


def test_every_task_gets_the_drivers_average_bit_for_bit():
    results = [result(2, 640, 3), result(0, 640, 1), result(1, 320, 2), result(3, 0, 4)]
    got, errors = run_tasks(results, rounds=2)
    assert not errors
    state, samples, loss = average_results(sorted(results, key=lambda r: r.partition))
    for partition in range(4):
        for averaged in got[partition]:
            assert averaged.samples == samples == 1600 and averaged.loss == loss
            for mine, expected in zip(averaged.state.weights + averaged.state.history,
                                      state.weights + state.history):
                assert mine.dtype == np.float32
                np.testing.assert_array_equal(mine, expected)
            assert [(r.partition, r.samples, r.seconds) for r in averaged.results] == [
                (0, 640, 0.5), (1, 320, 1.5), (2, 640, 2.5), (3, 0, 0.0)]
            assert all(r.state is None for r in averaged.results)


def test_a_single_task_averages_alone():
    alone = result(0, 64, 1)
    got, errors = run_tasks([alone], rounds=2)
    assert not errors
    for averaged in got[0]:
        assert averaged.samples == 64 and averaged.loss == alone.loss
        for mine, expected in zip(averaged.state.weights, alone.state.weights):
            np.testing.assert_array_equal(mine, expected)


@pytest.mark.parametrize("hello", [b"GET / HTTP/1.0\r\n\r\n", struct.pack("<Q", 2) + b"[]"])
def test_a_connection_without_the_secret_is_dropped_and_does_not_count(hello):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stranger = socket.create_connection(("127.0.0.1", port))
    stranger.sendall(hello)
    with pytest.raises(TimeoutError, match="1 of this SparkNet job's 2 tasks connected"):
        Averager.as_root(listener, 2, SECRET, timeout=1.0)
    try:  # closed by the root: an end of stream, or a reset as it left bytes unread
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
    got, errors = run_tasks([result(0, 64, 1), result(1, 64, 2)], peer_secret="wrong",
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
