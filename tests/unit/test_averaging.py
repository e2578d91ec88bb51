"""The in-job averaging of multi-round jobs (reduce-scatter + all-gather over a mesh), over
real loopback sockets (one thread per task)."""
import dataclasses
import socket
import struct
import threading
import time

import numpy as np
import pytest

from sparknet_ml.tasks import averaging
from sparknet_ml.tasks.averaging import Averager
from sparknet_ml.tasks.transport import Connection, receive
from sparknet_ml.driver import rounds as driver_rounds
from sparknet_ml.driver.planning import FitPlan
from sparknet_ml.driver.rounds import job_end, next_stop
from sparknet_ml.engine.state import RoundResult, SolverState, flatten, state_size
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
    return RoundResult(flatten(state), samples, float(rng.random()), partition, 0.5 + partition)


def run_tasks(results, rounds=1, secrets=None, timeout=10.0, fail=None, in_place=False,
              encrypt=False):
    """Each result's task (rank = its place in ``results``) averages ``rounds`` times; returns
    what every task got, by partition, and the errors raised. ``fail``: a rank that closes its
    connections after the reduce-scatter of round 1, as a task dying mid-average would.
    ``in_place``: each task's average goes into (a copy of) its own state vector.
    ``encrypt``: the mesh's connections are sealed."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in results]
    addresses = [listener.getsockname()[:2] for listener in listeners]
    secrets = secrets or [SECRET] * len(results)
    got, errors = {}, []

    def task(rank, r):
        try:
            with Averager.connect(rank, listeners[rank], addresses, secrets[rank],
                                  timeout, encrypt) as averager:
                if rank == fail:
                    averager._exchange({other: ({"partition": r.partition, "samples": 0,
                                                 "loss": 0.0, "seconds": 0.0}, [])
                                        for other in averager._peers}, 1 << 20)
                    raise ConnectionAbortedError("this task died mid-average")
                if in_place and r.state is not None:
                    mine = dataclasses.replace(r, state=r.state.copy())
                    got[r.partition] = [averager.average(mine, state_size(LIKE), out=mine.state)]
                else:
                    got[r.partition] = [averager.average(r, state_size(LIKE))
                                        for _ in range(rounds)]
        except Exception as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=task, args=(rank, r)) for rank, r in enumerate(results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got, errors


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("samples", [[640], [640, 320], [640, 0, 320], [0, 640, 320, 0, 64]])
def test_every_task_gets_the_drivers_average_bit_for_bit(samples, encrypt):
    """1, 2, 3 and 5 tasks, empty ones among them, ranks not in partition order; over plain
    and sealed connections."""
    results = [result(p, n, p + 1) for p, n in enumerate(samples)][::-1]
    got, errors = run_tasks(results, rounds=2, encrypt=encrypt)
    assert not errors
    state, total, loss = average_results(results, LIKE)
    for partition in range(len(samples)):
        for averaged in got[partition]:
            assert averaged.samples == total == sum(samples) and averaged.loss == loss
            assert averaged.state.dtype == np.float32
            np.testing.assert_array_equal(averaged.state, flatten(state))
            assert [(r.partition, r.samples) for r in averaged.results] == list(
                enumerate(samples))
            assert all(r.state is None for r in averaged.results)


@pytest.mark.parametrize("samples", [[640, 320], [0, 640, 320, 0, 64]])
def test_the_average_written_over_the_tasks_own_vector_is_the_same(samples):
    results = [result(p, n, p + 1) for p, n in enumerate(samples)]
    got, errors = run_tasks(results, in_place=True)
    assert not errors
    state, _, _ = average_results(results, LIKE)
    for partition in range(len(samples)):
        np.testing.assert_array_equal(got[partition][0].state, flatten(state))


def test_each_task_moves_about_twice_the_state_whatever_the_number_of_tasks(monkeypatch):
    sent, lock = [], threading.Lock()
    send = averaging.send

    def counting(sock, header, arrays=()):
        with lock:
            sent.append(sum(a.nbytes for a in arrays))
        send(sock, header, arrays)
    monkeypatch.setattr(averaging, "send", counting)
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
def test_a_connection_without_the_key_and_a_rank_is_dropped_and_does_not_count(hello):
    listener = socket.create_server(("127.0.0.1", 0))
    stranger = socket.create_connection(listener.getsockname()[:2])
    stranger.sendall(hello)
    with pytest.raises(TimeoutError, match="1 of this SparkNet job's 2 tasks connected"):
        Averager.connect(0, listener, [listener.getsockname()[:2], ("127.0.0.1", 1)], SECRET,
                         timeout=1.0)
    stranger.settimeout(5.0)
    try:  # the challenge, then closed by the task: an end of stream, or a reset
        while stranger.recv(4096):
            pass
    except ConnectionResetError:
        pass
    stranger.close()


def test_a_slow_stranger_delays_no_peer():
    """A stranger that sends one byte at a time from before the peers arrive: the peers
    join at once (authenticated beside it), and it is dropped at the hello deadline."""
    listener = socket.create_server(("127.0.0.1", 0))
    stranger = socket.create_connection(listener.getsockname()[:2])
    stop = threading.Event()

    def dribble():
        try:
            for byte in struct.pack("<Q", 1000):
                if stop.wait(0.5):
                    return
                stranger.sendall(bytes([byte]))
        except OSError:
            pass
    threading.Thread(target=dribble, daemon=True).start()
    listeners = [listener, socket.create_server(("127.0.0.1", 0))]
    addresses = [sock.getsockname()[:2] for sock in listeners]
    joined = []

    def task(rank):
        with Averager.connect(rank, listeners[rank], addresses, SECRET, timeout=30.0):
            joined.append(time.monotonic())
    started = time.monotonic()
    threads = [threading.Thread(target=task, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    stranger.close()
    assert len(joined) == 2 and max(joined) - started < 2.0


def test_arrays_over_the_receivers_limit_are_refused_unallocated():
    mine, theirs = socket.socketpair()
    header = b'{"shapes": [[1000000000000]]}'  # 4 TB of float32
    theirs.sendall(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ConnectionError, match="4000000000000 bytes of arrays where at most 48"):
        receive(Connection(mine), limit=48, timeout=1.0)
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


@pytest.mark.parametrize("per_job, start, round_seconds, holds, expected", [
    (None, 0, None, (None, None), 1),      # auto: the first job runs one round
    (None, 1, 0.25, (None, None), 41),     # then about AUTO_JOB_SECONDS of rounds
    (None, 1, 0.5, (None, None), 21),
    (None, 1, 30.0, (None, None), 2),      # rounds slower than that: one a job
    (None, 1, 0.1, (10, None), 10),        # never past a checkpoint
    (None, 1, 0.1, (None, 5), 5),          # nor a validation round
    (None, 95, 0.1, (None, None), 100),    # nor the last round
    (3, 1, 0.1, (None, None), 4), (1, 7, None, (None, None), 8)])
def test_a_job_runs_about_ten_seconds_of_rounds_up_to_the_next_hold(
        monkeypatch, per_job, start, round_seconds, holds, expected):
    monkeypatch.setattr(driver_rounds, "AUTO_JOB_SECONDS", 10.0)
    plan = FitPlan(rounds=100, tau=10, seed=0, workers=2, rounds_per_job=per_job,
                   checkpoint_every=holds[0], validate_every=holds[1])
    assert plan.barrier == (per_job != 1)
    assert next_stop(plan, start, round_seconds) == expected
