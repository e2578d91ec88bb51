"""The worker engine without Spark: rounds are pure and continue one solver run exactly."""
import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from sparknet_ml.engine.solver import make_solver  # noqa: E402
from sparknet_ml.engine.transform import Transform  # noqa: E402
from sparknet_ml.engine.state import RoundResult, SolverState, flatten, unflatten  # noqa: E402
from sparknet_ml.engine.worker import (TrainSpec, average_results, batch_indices,  # noqa: E402
                                       get_state, set_state, train_round)

TINY_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 4 } shape { dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """base_lr: 0.1 momentum: 0.9 weight_decay: 0.001 lr_policy: "multistep"
gamma: 0.5 stepvalue: 7 stepvalue: 15 type: "SGD" """


def tiny_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.float32)
    features = (rng.normal(size=(n, 4)) + labels[:, None]).astype(np.float32)
    return features, labels


@pytest.fixture
def spec():
    caffe.set_mode_cpu()
    return TrainSpec(TINY_NET, SOLVER, batch_size=8)


def initial(spec, seed=1):
    caffe.set_random_seed(seed)
    return get_state(make_solver(spec.net_text, spec.solver_text, spec.batch_size))


def test_batch_order_depends_only_on_seed_partition_and_epoch():
    first = batch_indices(10, 4, first_iter=0, iters=5, seed=3, partition=1)
    assert first.shape == (5, 4)
    assert sorted(first.ravel()[:10]) == list(range(10))  # epoch 0 is a permutation
    again = batch_indices(10, 4, first_iter=2, iters=3, seed=3, partition=1)
    np.testing.assert_array_equal(again, first[2:])
    other = batch_indices(10, 4, first_iter=0, iters=5, seed=3, partition=2)
    assert not np.array_equal(other, first)


def test_a_round_is_a_pure_function_of_its_inputs(spec):
    x, y = tiny_data()
    state = initial(spec)
    a = train_round(spec, x, y, state, round_index=2, tau=5, seed=9, partition=0)
    train_round(spec, x[::-1].copy(), y, state, round_index=0, tau=3, seed=1, partition=1)
    b = train_round(spec, x, y, state, round_index=2, tau=5, seed=9, partition=0)
    np.testing.assert_array_equal(a.state, b.state)
    assert a.samples == 40 and a.loss == b.loss


def test_rounds_of_one_worker_continue_a_single_solver_run_exactly(spec):
    """State = weights + momentum history, iter = global iteration: splitting the run into
    rounds changes nothing, across the multistep learning-rate drops at 7 and 15."""
    x, y = tiny_data()
    state = initial(spec)
    rounds = state
    for r in range(4):
        rounds = train_round(spec, x, y, rounds, r, tau=5, seed=4, partition=0).state
    single = make_solver(spec.net_text, spec.solver_text, spec.batch_size)
    set_state(single, state)
    for rows in batch_indices(len(x), 8, 0, 20, seed=4, partition=0):
        single.net.blobs["data"].data[...] = x[rows]
        single.net.blobs["label"].data[...] = y[rows]
        single.step(1)
    assert single.iter == 20
    np.testing.assert_allclose(rounds, flatten(get_state(single)), rtol=0, atol=1e-6)
    assert np.abs(unflatten(rounds, state).history[0]).max() > 0  # momentum carried, not reset


def test_average_weights_by_samples_and_skip_empty_partitions():
    one = SolverState([np.full(2, 1.0, np.float32)], [np.zeros(2, np.float32)])
    three = SolverState([np.full(2, 3.0, np.float32)], [np.ones(2, np.float32)])
    state, samples, loss = average_results([RoundResult(flatten(one), 10, 1.0),
                                            RoundResult(None, 0, 0.0),
                                            RoundResult(flatten(three), 30, 2.0)], one)
    np.testing.assert_allclose(state.weights[0], [2.5, 2.5])
    np.testing.assert_allclose(state.history[0], [0.75, 0.75])
    assert samples == 40 and loss == pytest.approx(1.75)
    with pytest.raises(ValueError, match="no partition saw any data"):
        average_results([RoundResult(None, 0, 0.0)], one)


def test_empty_partition_returns_no_state(spec):
    result = train_round(spec, np.empty((0, 4), np.float32), np.empty(0, np.float32),
                         initial(spec), 0, 5, 0, 0)
    assert result.state is None and result.samples == 0


def test_tf32_is_opt_in_and_part_of_the_solver_key(spec):
    tf32 = TrainSpec(**{**spec.__dict__, "tf32": True})
    assert not spec.tf32 and tf32.key() != spec.key()


AUTOENCODER = """
name: "autoencoder"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "data" top: "loss" }
"""


@pytest.mark.parametrize("net, label_top", [(TINY_NET, "label"), (AUTOENCODER, "")])
def test_a_resident_block_trains_exactly_like_batches_fed_from_the_host(net, label_top):
    """The GPU feed (block inside the net, rows gathered by Caffe) on the CPU: same rows,
    same transform, same numbers; across a change of block and of tau in one process."""
    caffe.set_mode_cpu()
    host = TrainSpec(net, SOLVER, batch_size=8, label_top=label_top,
                     transform=Transform(0.02, (100.0,)))
    resident = TrainSpec(**{**host.__dict__, "resident": True})
    assert resident.key() != host.key()
    blocks = [(rng.integers(0, 256, (n, 4)).astype(np.uint8),
               rng.integers(0, 3, n).astype(np.float32))
              for rng, n in ((np.random.default_rng(1), 40), (np.random.default_rng(2), 24))]
    state = initial(host)
    for r, (block, tau) in enumerate([(0, 5), (1, 5), (0, 3), (0, 3)]):
        results = [train_round(spec, *blocks[block], state, r, tau, seed=7, partition=block)
                   for spec in (host, resident)]
        np.testing.assert_allclose(results[0].state, results[1].state, rtol=0, atol=1e-6)
        assert results[0].loss == pytest.approx(results[1].loss, rel=1e-6)
        state = results[0].state.copy()  # the solver's own vector: its next round rewrites it
    from sparknet_ml.engine.worker import cached_solver
    layers = cached_solver(resident).net.layers
    assert [layer.type for layer in layers[:2]] == ["Input", "SparkNetRows"]


def test_the_resident_net_refuses_blob_names_it_needs_and_a_missing_data_top():
    from sparknet_ml.engine.solver import net_with_batch, with_resident_block
    net = net_with_batch(TINY_NET, 8)
    with pytest.raises(ValueError, match="no Input layer with top 'pixels'"):
        with_resident_block(net, "pixels", "label")
    net.layer[1].top[0] = "sparknet_rows"
    with pytest.raises(ValueError, match=r"already has blobs \['sparknet_rows'\]"):
        with_resident_block(net, "data", "label")


CONV_NET = """
name: "tiny_conv"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 2 dim: 5 dim: 4 } shape { dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("mean", ["image", "values"])
def test_a_resident_block_with_random_crops_and_mirrors_trains_like_the_host_feed(mean):
    """Crops, mirrors and the mean done by the SparkNetTransform layer inside the net (the GPU
    feed, here on the CPU) against the numpy transform on the host: same draws, same batches."""
    caffe.set_mode_cpu()
    rng = np.random.default_rng(4)
    shape = (2, 7, 6)
    transform = (Transform(0.05, (), rng.uniform(0, 255, shape).astype(np.float32), (5, 4), True)
                 if mean == "image" else Transform(0.05, (90.0, 120.0), None, (5, 4), True))
    host = TrainSpec(CONV_NET, SOLVER, batch_size=8, transform=transform)
    resident = TrainSpec(**{**host.__dict__, "resident": True})
    features = rng.integers(0, 256, (30, *shape)).astype(np.uint8)
    labels = rng.integers(0, 3, 30).astype(np.float32)
    state = initial(host)
    for r in range(3):
        results = [train_round(spec, features, labels, state, r, 4, seed=7, partition=1)
                   for spec in (host, resident)]
        np.testing.assert_allclose(results[0].state, results[1].state, rtol=0, atol=1e-6)
        assert results[0].loss == pytest.approx(results[1].loss, rel=1e-6)
        state = results[0].state.copy()  # the solver's own vector: its next round rewrites it


@pytest.mark.parametrize("extra", [
    # an Accuracy output whose name sorts first: it is not a loss
    'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "a_accuracy" }',
    # an auxiliary loss with loss weight 0.3, GoogLeNet-style, named to sort first
    'layer { name: "aux" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "a_aux_loss" '
    'loss_weight: 0.3 }',
])
def test_the_round_loss_is_the_loss_weighted_sum_caffe_reports(extra):
    """Hardening issue, item 5: the loss was net.outputs[0], the first output by name."""
    caffe.set_mode_cpu()
    plain = TrainSpec(TINY_NET, SOLVER, batch_size=8)
    more = TrainSpec(TINY_NET + extra, SOLVER, batch_size=8)
    x, y = tiny_data()
    state = initial(plain)
    loss = train_round(plain, x, y, state, 0, 1, seed=3, partition=0).loss
    both = train_round(more, x, y, state, 0, 1, seed=3, partition=0).loss
    expected = loss * (1.3 if "aux" in extra else 1.0)  # the same logits, one step
    assert both == pytest.approx(expected, rel=1e-5) and loss > 0.5


def test_a_worker_keeps_at_most_max_cached_solvers_releasing_the_least_recent(spec):
    """Many-GPUs issue: a baseLr sweep built one solver per fit in every worker, forever."""
    import weakref
    from sparknet_ml.engine import worker
    worker._SOLVERS.clear()
    sweep = [TrainSpec(TINY_NET, SOLVER.replace("base_lr: 0.1", f"base_lr: {lr}"), 8,
                       resident=True) for lr in (0.1, 0.2, 0.3, 0.4, 0.5)]
    features, labels = tiny_data()
    built = []
    for fit in sweep:
        train_round(fit, features, labels, initial(fit), 0, 2, 0, 0)
        built.append(weakref.ref(worker.cached_solver(fit)))
        assert len(worker._SOLVERS) <= worker.MAX_CACHED_SOLVERS
        assert set(worker._BLOCKS) <= set(worker._SOLVERS)
    assert [ref() is None for ref in built] == [True, True, True, False, False]
    assert worker.cached_solver(sweep[3]) is built[3]()  # kept: reused, not rebuilt
    worker._SOLVERS.clear()
    worker._BLOCKS.clear()
