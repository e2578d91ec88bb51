"""The worker engine (what Spark tasks run) on GPU 0 against the same calls on the CPU: a
training round and a scoring pass over several batches must agree. Runs only with a CUDA
build (the GPU machine). It caught batches 2.. of a round or scoring call silently reusing
the first batch on the GPU: a numpy view of ``Blob.data`` taken once is not re-uploaded.
"""
import numpy as np
import pytest

from sparknet_ml import zoo
from sparknet_ml.data import fashion_mnist
from sparknet_ml.engine.scoring import ScoreSpec, cached_net, forward
from sparknet_ml.engine.solver import make_solver
from sparknet_ml.engine.transform import Transform
from sparknet_ml.engine.state import flatten, unflatten
from sparknet_ml.engine.worker import (TrainSpec, get_state, held_state, load_state, named_weights,
                                       read_state, set_state, train_round)

from .conftest import build_info, caffe

pytestmark = pytest.mark.skipif(not build_info()["cuda"], reason="this pycaffe has no CUDA")

RTOL = 1e-4  # of the largest value; fp32 cuDNN/cuBLAS vs OpenBLAS after a few SGD steps


@pytest.fixture(scope="module")
def lenet():
    images, labels = fashion_mnist.load("train")
    spec = TrainSpec(zoo.prototxt("lenet_train"), zoo.prototxt("lenet_solver"), batch_size=64,
                     transform=Transform(0.00390625))
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    solver = make_solver(spec.net_text, spec.solver_text, spec.batch_size)
    layout = [(name, len(blobs)) for name, blobs in solver.net.params.items()]
    x, y = images[:512, None].copy(), labels[:512].astype(np.float32)
    return spec, x, y, get_state(solver), layout


def close(gpu, cpu, what):
    scale = max(1.0, float(np.abs(cpu).max()))  # tiny blobs (momentum of biases) need a floor
    error = float(np.abs(gpu - cpu).max())
    assert error <= RTOL * scale, f"{what}: max |GPU - CPU| = {error:.3g} > {RTOL} x {scale:.3g}"


def compare(gpu, cpu, like):
    """Two state vectors, blob by blob."""
    gpu, cpu = unflatten(gpu, like), unflatten(cpu, like)
    for k, (g, c) in enumerate(zip(gpu.weights + gpu.history, cpu.weights + cpu.history)):
        close(g, c, f"blob {k} after 6 steps")


@pytest.mark.parametrize("resident", [False, True], ids=["host-fed", "resident"])
def test_a_training_round_on_the_gpu_matches_the_cpu(lenet, resident):
    spec, x, y, state, _ = lenet
    gpu_spec = TrainSpec(**{**spec.__dict__, "gpu": 0, "resident": resident})
    cpu = train_round(spec, x, y, state, round_index=0, tau=6, seed=5, partition=0)
    gpu = train_round(gpu_spec, x, y, state, round_index=0, tau=6, seed=5, partition=0)
    caffe.set_mode_cpu()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(
        unflatten(cpu.state, state).weights, state.weights))
    assert moved > 100 * RTOL  # six steps changed the weights: the comparison means something
    compare(gpu.state, cpu.state, state)
    assert abs(gpu.loss - cpu.loss) <= 1e-3 * abs(cpu.loss)


@pytest.mark.parametrize("mean", ["values", "image"])
def test_random_crops_and_mirrors_on_the_gpu_match_the_cpus(lenet, mean):
    """The SparkNetTransform layer in a resident GPU net against the numpy transform feeding
    the CPU: LeNet on 32x32 pictures, random 28x28 crops and mirrors."""
    spec, x, y, state, _ = lenet
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    mean_image = padded.mean(axis=0).astype(np.float32) if mean == "image" else None
    transform = Transform(0.00390625, () if mean == "image" else (33.0,), mean_image,
                          (28, 28), True)
    cpu_spec = TrainSpec(**{**spec.__dict__, "transform": transform})
    gpu_spec = TrainSpec(**{**cpu_spec.__dict__, "gpu": 0, "resident": True})
    cpu = train_round(cpu_spec, padded, y, state, round_index=2, tau=6, seed=5, partition=1)
    gpu = train_round(gpu_spec, padded, y, state, round_index=2, tau=6, seed=5, partition=1)
    caffe.set_mode_cpu()
    compare(gpu.state, cpu.state, state)
    assert abs(gpu.loss - cpu.loss) <= 1e-3 * abs(cpu.loss)


def test_scoring_several_batches_on_the_gpu_matches_the_cpu(lenet):
    spec, x, _, state, layout = lenet
    features = spec.transform.apply(x[:200])  # 3 batches and a part
    weights = named_weights(state, layout)
    outputs = {}
    for gpu in (None, 0):
        score = ScoreSpec(spec.net_text, 64, "data", ("ip2",), gpu)
        outputs[gpu] = forward(cached_net(score, "w", weights), score, features)[0]
    caffe.set_mode_cpu()
    assert len(np.unique(outputs[None].argmax(axis=1))) > 1  # rows score differently
    close(outputs[0], outputs[None], "logits of 200 rows")


def test_the_flat_state_moves_the_state_element_for_element_as_blob_by_blob(lenet):
    """pycaffe-flat-state: one pinned buffer, one copy each way, against get_state/set_state
    blob by blob; and a round whose state stays in the solver (keep=True) against one that
    leaves it after every round."""
    spec, x, y, state, _ = lenet
    gpu_spec = TrainSpec(**{**spec.__dict__, "gpu": 0, "resident": True})
    train_round(gpu_spec, x, y, state, round_index=0, tau=2, seed=5, partition=0)
    from sparknet_ml.engine.worker import cached_solver
    solver = cached_solver(gpu_spec)
    vector = read_state(solver, gpu_spec)
    assert solver.flat_state.size == vector.size == flatten(state).size
    np.testing.assert_array_equal(vector, flatten(get_state(solver)))  # read: same bits
    changed = flatten(state) * np.float32(0.5)
    load_state(solver, gpu_spec, changed)
    np.testing.assert_array_equal(flatten(get_state(solver)), changed)  # load: same bits
    set_state(solver, state)  # blob by blob on the host, then read through the buffer
    np.testing.assert_array_equal(read_state(solver, gpu_spec), flatten(state))
    # three rounds kept in the solver = three rounds each leaving it and coming back
    kept = state
    for r in range(3):
        train_round(gpu_spec, x, y, kept, r, tau=4, seed=5, partition=0, keep=True)
        kept = None
    kept = held_state(gpu_spec, x).copy()
    trip = state
    for r in range(3):
        trip = train_round(gpu_spec, x, y, trip, r, tau=4, seed=5, partition=0).state.copy()
    caffe.set_mode_cpu()
    assert np.abs(kept - flatten(state)).max() > 100 * RTOL
    close(kept, trip, "3 rounds in the solver vs through the host")
