"""Solver.step replaying a CUDA graph (patch ``cuda-graph-step``) against Caffe's plain
iterations on the same GPU: LeNet and cifar10_quick trained both ways from the same weights on
the same batches (a new batch written between step calls, a FlatState moving the blobs, which
makes the graph be captured again) end with the same weights and history within cuDNN's
run-to-run tolerance, the same smoothed loss, and the replays counted; SparkNet rounds on a
resident block (rows, or crops and mirrors drawn) run their tau iterations as tau replays and
train as the plain iterations do; a net with a layer the graph cannot hold (Dropout draws
random numbers) runs plain iterations and says why. Runs only with a CUDA build.
"""
import numpy as np
import pytest

from sparknet_ml import zoo
from sparknet_ml.data import fashion_mnist
from sparknet_ml.engine.solver import make_solver
from sparknet_ml.engine.state import flatten, unflatten
from sparknet_ml.engine.transform import Transform
from sparknet_ml.engine.worker import (TrainSpec, cached_solver, get_state, set_state,
                                       train_round)

from .conftest import build_info, caffe

pytestmark = pytest.mark.skipif(not build_info()["cuda"], reason="this pycaffe has no CUDA")

RTOL = 1e-4  # of the largest value: one solver, so the same cuDNN algorithms both ways


def batches(net, batch, count):
    rng = np.random.default_rng(4)
    channels, size = (1, 28) if net == "lenet" else (3, 32)
    return [(rng.random((batch, channels, size, size), dtype=np.float32),
             rng.integers(0, 10, batch).astype(np.float32)) for _ in range(count)]


def trained(solver, start, plain, data):
    """The state and smoothed losses after 7 steps per batch of ``data`` from ``start``;
    the blobs move (a new FlatState) after the first batch, so a graph is captured again.
    Both ways run in one solver: two solvers time their cuDNN algorithms separately and may
    choose ones that round differently."""
    from caffe._caffe import FlatState
    caffe.set_cuda_graph(not plain)
    try:
        set_state(solver, start)
        solver.iter = 0
        losses = []
        for k, (x, y) in enumerate(data):
            solver.net.blobs["data"].data[...] = x
            solver.net.blobs["label"].data[...] = y
            if k == 1:
                solver.flat_state = FlatState(solver)  # every blob moves: captured again
            solver.step(7)
            losses.append(solver.smoothed_loss)
        return get_state(solver), losses
    finally:
        caffe.set_cuda_graph(True)


def close(a, b, what):
    scale = max(1.0, float(np.abs(b).max()))
    assert float(np.abs(a - b).max()) <= RTOL * scale, what


@pytest.mark.parametrize("net", ["lenet", "cifar10_quick"])
def test_replayed_iterations_train_as_the_plain_ones(net):
    caffe.set_device(0)
    caffe.set_mode_gpu()
    try:
        caffe.set_random_seed(9)
        solver = make_solver(zoo.prototxt(f"{net}_train"), zoo.prototxt(f"{net}_solver"), 64)
        start = get_state(solver)
        data = batches(net, 64, 3)
        plain, plain_losses = trained(solver, start, True, data)
        replays = solver.cuda_graph_replays
        graph, graph_losses = trained(solver, start, False, data)
    finally:
        caffe.set_mode_cpu()
    assert replays == 0
    assert solver.cuda_graph_refusal == "" and solver.cuda_graph_replays == 3 * 7 - 2
    assert solver.iter == 21
    np.testing.assert_allclose(graph_losses, plain_losses, rtol=1e-4)
    for k, (p, g) in enumerate(zip(plain.weights + plain.history,
                                   graph.weights + graph.history)):
        close(g, p, f"blob {k}")
    assert np.abs(graph.weights[0] - start.weights[0]).max() > 0


@pytest.mark.parametrize("crops", [False, True], ids=["rows", "crops and mirrors"])
def test_sparknet_rounds_are_tau_replays_and_train_as_the_plain_iterations(crops):
    images, labels = fashion_mnist.load("train")
    x, y = images[:512, None].copy(), labels[:512].astype(np.float32)
    transform = Transform(0.00390625)
    if crops:  # 28x28 crops of 32x32 pictures, mirrored at random (the SparkNetTransform layer)
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        transform = Transform(0.00390625, (33.0,), None, (28, 28), True)
    spec = TrainSpec(zoo.prototxt("lenet_train"), zoo.prototxt("lenet_solver"), batch_size=64,
                     transform=transform, gpu=0, resident=True)
    try:
        solver = cached_solver(spec, packed=crops)  # crops: the uint8 block packed
        start = get_state(solver)

        def rounds(graph):
            caffe.set_cuda_graph(graph)
            try:
                before, state, losses = solver.cuda_graph_replays, flatten(start), []
                for r in range(3):
                    result = train_round(spec, x, y, state, r, tau=5, seed=5, partition=0)
                    state = result.state.copy()  # the solver's buffer: the next round rewrites it
                    losses.append(result.loss)
                return state, losses, solver.cuda_graph_replays - before
            finally:
                caffe.set_cuda_graph(True)

        plain, graph = rounds(False), rounds(True)
    finally:
        caffe.set_mode_cpu()
    assert plain[2] == 0
    # the first iteration of the first round runs plain, then the graph is captured
    assert solver.cuda_graph_refusal == "" and graph[2] == 3 * 5 - 1
    np.testing.assert_allclose(graph[1], plain[1], rtol=1e-4)
    replayed, iterated = unflatten(graph[0], start), unflatten(plain[0], start)
    assert max(float(np.abs(w - s).max()) for w, s in zip(replayed.weights, start.weights)) > 1e-3
    for k, (g, p) in enumerate(zip(replayed.weights + replayed.history,
                                   iterated.weights + iterated.history)):
        close(g, p, f"blob {k} after 3 rounds")


def test_a_net_with_dropout_runs_plain_iterations_and_says_why():
    caffe.set_device(0)
    caffe.set_mode_gpu()
    try:
        text = zoo.prototxt("lenet_train").replace(
            'layer { name: "relu1"',
            'layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" }\nlayer { name: "relu1"')
        assert '"Dropout"' in text
        solver = make_solver(text, zoo.prototxt("lenet_solver"), 16)
        solver.step(3)
    finally:
        caffe.set_mode_cpu()
    assert solver.cuda_graph_replays == 0
    assert solver.cuda_graph_refusal == "layer 'drop' (Dropout)"
