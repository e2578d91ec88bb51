"""States between driver and tasks: the route's choice, and the driver's socket server."""
import contextlib
import socket

import numpy as np
import pytest

from sparknet_ml.tasks.wire import recv_message, send_message
from sparknet_ml.driver.exchange import SocketChannel, plan_route
from sparknet_ml.engine.state import SolverState

MIB = 2 ** 20


def test_small_states_go_through_spark_and_large_ones_over_sockets():
    heap, results = 1024 * MIB, 1024 * MIB
    assert not plan_route(4 * MIB, 2, 1, heap, results).sockets             # LeNet
    caffenet = 466 * MIB                                                    # weights + momentum
    route = plan_route(caffenet, 2, 1, heap, results)
    assert route.sockets and "spark.driver.memory" in route.reason
    assert plan_route(192 * MIB, 2, 1, heap, results).sockets  # the LeNet, ip1 30000
    # a barrier job returns one state: 2 x 100 MiB fits a quarter of 1 GiB, 3 x 100 does not
    assert not plan_route(100 * MIB, 2, 5, heap, results).sockets
    assert plan_route(100 * MIB, 2, 1, heap, results).sockets
    # spark.driver.maxResultSize binds on its own (0 = unlimited)
    assert plan_route(10 * MIB, 4, 1, 64 * 1024 * MIB, 64 * MIB).sockets
    assert not plan_route(10 * MIB, 4, 1, 64 * 1024 * MIB, 0).sockets


def state(seed):
    rng = np.random.default_rng(seed)
    return SolverState([rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(
        np.float32)], [rng.normal(size=(3, 4)).astype(np.float32)])


def test_socket_channel_serves_the_start_state_and_takes_states_back():
    channel = SocketChannel("127.0.0.1")
    try:
        start = state(0)
        shared = channel.share(start)
        fetched = shared.value
        for a, b in zip(fetched.weights + fetched.history, start.weights + start.history):
            np.testing.assert_array_equal(a, b)
        assert shared.send("1", state(1)) is None          # the task's result carries no state
        assert shared.send("0", None) is None              # an empty partition sends nothing
        taken = channel.take(shared, "1", None)
        np.testing.assert_array_equal(taken.weights[0], state(1).weights[0])
        assert channel.take(shared, "0", None) is None
        channel.release(shared)
        assert not channel._server.states
    finally:
        channel.close()


def test_socket_channel_ignores_a_connection_without_the_secret():
    channel = SocketChannel("127.0.0.1")
    try:
        shared = channel.share(state(0))
        with socket.create_connection((shared.host, shared.port)) as sock:
            send_message(sock, {"secret": "0" * 32, "get": shared.key})
            with pytest.raises(ConnectionError):
                recv_message(sock)  # closed without an answer
        with socket.create_connection((shared.host, shared.port)) as sock:
            send_message(sock, {"secret": "0" * 32, "put": f"{shared.key}/0", "weights": 1})
            # the server may have closed the connection already, before any array
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                send_message(sock, {}, [np.zeros(3, np.float32)])
        assert list(channel._server.states) == [shared.key]
    finally:
        channel.close()
