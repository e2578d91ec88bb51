"""Safe prototxt parsing and the layer allowlist."""
import pathlib
import re

import numpy as np
import pytest
from caffe.proto import caffe_pb2

from sparknet_ml import zoo
from sparknet_ml.net import (ALLOWED_LAYER_TYPES, DATA_LAYER_TYPES, NetSpecError, check_bottoms,
                             check_layers, check_solver, net_to_text, parse_net, parse_solver)
from sparknet_ml.net.prototxt import (UpgradedFormatWarning, check_learning_rates, divergence_hint,
                                      learning_rates)

TINY = 'name: "tiny"\nlayer { name: "data" type: "Input" top: "data" }\n'


def test_parse_error_names_line_and_column():
    text = 'name: "bad"\nlayer {\n  name: "ip"\n  typo: "InnerProduct"\n}\n'
    with pytest.raises(NetSpecError, match=r"line 4 column 3: .*no field named \"typo\""):
        parse_net(text)
    with pytest.raises(NetSpecError, match=r"SolverParameter text: line 1 column 10"):
        parse_solver("base_lr: fast")


def test_text_path_and_message_are_equivalent(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    from_text, from_str, from_pathlike = parse_net(TINY), parse_net(str(path)), parse_net(path)
    assert from_text == from_str == from_pathlike
    assert from_text.layer[0].type == "Input"
    copy = parse_net(from_text)
    assert copy == from_text and copy is not from_text
    copy.name = "changed"
    assert from_text.name == "tiny"


def test_text_with_braces_is_never_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "layer {").write_text('name: "from file"')
    with pytest.raises(NetSpecError, match="line 1"):
        parse_net("layer {")


def test_missing_file_is_reported():
    with pytest.raises(ValueError, match="cannot read /nonexistent/net.prototxt: no such file"):
        parse_net(pathlib.Path("/nonexistent/net.prototxt"))
    with pytest.raises(NetSpecError, match="neither an existing file nor valid prototxt"):
        parse_net("/nonexistent/net.prototxt")
    with pytest.raises(TypeError):
        parse_net(42)


def test_v1_layers_are_upgraded_by_caffe_with_a_warning():
    v1 = 'name: "old"\nlayers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" }\n'
    with pytest.warns(UpgradedFormatWarning, match="net 'old' .* upgraded its V1 'layers'"):
        net = parse_net(v1)
    assert [(layer.name, layer.type) for layer in net.layer] == [("conv1", "Convolution")]


def test_net_to_text_round_trips_zoo_lenet():
    net = parse_net(zoo.prototxt("lenet_train"))
    assert parse_net(net_to_text(net)) == net
    assert [layer.name for layer in net.layer][:2] == ["data", "conv1"]


def test_solver_parses_zoo_solver():
    solver = parse_solver(zoo.prototxt("lenet_solver"))
    assert solver.base_lr > 0 and isinstance(solver, caffe_pb2.SolverParameter)


@pytest.mark.parametrize("layer_type",
                         ["Python", "HDF5Output", "InfogainLoss", "AnnotatedData", "VideoData"])
def test_allowlist_rejects_file_and_code_layers(layer_type):
    net = parse_net(zoo.prototxt("lenet_train"))
    net.layer.add(name="sneaky", type=layer_type, bottom=["ip2"])
    with pytest.raises(NetSpecError, match=f"layer 'sneaky' has type '{layer_type}'"):
        check_layers(net)


def test_allowlist_accepts_zoo_nets():
    for name in ("lenet_train", "cifar10_quick_train"):
        check_layers(parse_net(zoo.prototxt(name)))


def test_allowlist_types_exist_in_the_built_caffe():
    import caffe
    registered = set(caffe.layer_type_list())
    # ImageData and WindowData need OpenCV; they are only ever replaced, never built.
    assert ALLOWED_LAYER_TYPES - registered <= {"ImageData", "WindowData"}
    assert DATA_LAYER_TYPES <= ALLOWED_LAYER_TYPES
    assert not {"Python", "HDF5Output", "InfogainLoss", "DetectionOutput"} & ALLOWED_LAYER_TYPES


def test_check_bottoms_names_the_missing_blob():
    net = parse_net(TINY + 'layer { name: "ip" type: "InnerProduct" bottom: "dat" top: "ip" }')
    with pytest.raises(NetSpecError, match="layer 'ip': bottom 'dat'"):
        check_bottoms(net)


@pytest.mark.parametrize("text, iterations, message", [
    ('lr_policy: "poly" power: 1 max_iter: 100', 2000,
     "max_iter 100 ends before the fit's 2000 iterations"),                  # the case
    ('lr_policy: "poly" power: 0.5 max_iter: 1999', 2000, "raise max_iter to at least 2000"),
    ('lr_policy: "fixed" regularization_type: "L3"', None, "regularization_type 'L3'"),
    ('lr_policy: "fixed" iter_size: 0', None, "iter_size must be at least 1, got 0"),
    ('lr_policy: "fixed" weight_decay: -0.1', None, "weight_decay must be at least 0"),
    ('lr_policy: "fixed" momentum: 5', None, "momentum must be in \\[0, 1\\), got 5"),
    ('lr_policy: "fixed" type: "Adam" momentum2: -0.5', None, "momentum2 must be in"),
    ('lr_policy: "fixed" clip_gradients: -3', None, "clip_gradients must be at least 0"),
    # hardening round 2, item 4: every step NaN, then blamed on base_lr
    ('lr_policy: "fixed" type: "AdaDelta" momentum: 0.95 delta: 0', None,
     "delta must be positive and finite with type 'AdaDelta', got 0.0"),       # the case
    ('lr_policy: "fixed" type: "Adam" delta: nan', None, "delta must be positive and finite"),
    ('lr_policy: "fixed" type: "RMSProp" rms_decay: 1', None,
     "rms_decay must be in \\[0, 1\\) with type 'RMSProp', got 1.0"),
    ('lr_policy: "fixed" type: "AdaGrad" momentum: 0.9', None,
     "momentum must be 0 with type 'AdaGrad', got 0.9"),
    ('lr_policy: "fixed" weight_decay: inf', None, "weight_decay must be at least 0 and finite"),
    ('lr_policy: "inv" gamma: -0.001 power: 0.75', 2000,                      # the case
     "lr_policy 'inv' \\(base_lr 0.01, gamma -0.001, power 0.75\\) gives a learning rate of "
     "inf at iteration 1000 of the fit's 2000"),
    ('lr_policy: "inv" gamma: -0.003 power: 0.5', 2000, "gives a learning rate of nan at "
                                                        "iteration 334"),
    ('lr_policy: "exp" gamma: -0.5', 10, "gamma -0.5\\) gives a learning rate of -0.005 at "
                                         "iteration 1"),
    ('lr_policy: "step" gamma: 10 stepsize: 10', 2000, "gives a learning rate of inf"),
    ('lr_policy: "multistep" gamma: -0.1 stepvalue: 5 stepvalue: 8', 10,
     "stepvalue \\[5, 8\\]\\) gives a learning rate of -0.001 at iteration 5"),
])
def test_solver_fields_caffe_would_check_are_refused_by_name(text, iterations, message):
    """Hardening issue, items 6 and 8, and round 2, item 4: each of these aborted a task,
    trained with a negative learning rate or on NaN, or was blamed on base_lr."""
    with pytest.raises(NetSpecError, match=message):
        check_solver(parse_solver("base_lr: 0.01 " + text), iterations)


def test_stock_solvers_pass_the_solver_checks():
    for name in ("lenet_solver", "cifar10_quick_solver", "bvlc_googlenet_solver",
                 "bvlc_reference_caffenet_solver"):
        check_solver(parse_solver(zoo.prototxt(name)), 40 * 50)
    check_solver(parse_solver('base_lr: 0.01 lr_policy: "poly" power: 1 max_iter: 2000'), 2000)


RATE_NET = """name: "rate"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 1 bias_term: false } }
layer { name: "loss" type: "Reduction" bottom: "ip" top: "loss" loss_weight: 1 }
"""


@pytest.mark.parametrize("schedule", [
    'lr_policy: "fixed"', 'lr_policy: "step" gamma: 0.5 stepsize: 10',
    'lr_policy: "exp" gamma: 0.99', 'lr_policy: "inv" gamma: 0.001 power: 0.75',
    'lr_policy: "multistep" gamma: 0.1 stepvalue: 5 stepvalue: 12',
    'lr_policy: "poly" power: 2 max_iter: 100', 'lr_policy: "sigmoid" gamma: -0.1 stepsize: 50',
    'lr_policy: "exp" gamma: -0.5', 'lr_policy: "inv" gamma: -0.1 power: 1',
])
def test_learning_rates_are_the_rates_caffe_steps_with(schedule):
    """The loss is w * 1, so its gradient is 1 and Caffe's SGD update (momentum 0), left in
    the weight's diff, is the learning rate itself."""
    caffe = pytest.importorskip("caffe")
    from sparknet_ml.engine.solver import make_solver
    caffe.set_mode_cpu()
    text = "base_lr: 0.01 " + schedule
    solver = make_solver(RATE_NET, text, 1)
    iterations = [0, 1, 4, 5, 7, 11, 12, 15, 60, 99]
    stepped = []
    for i in iterations:
        solver.iter = i
        solver.net.blobs["data"].data[...] = 1
        solver.step(1)
        stepped.append(solver.net.params["ip"][0].diff.item())
    np.testing.assert_allclose(learning_rates(parse_solver(text), iterations), stepped,
                               rtol=1e-6)


def test_the_schedule_check_finds_every_iteration_a_dense_scan_finds():
    """check_learning_rates evaluates a few turning points; a scan of every iteration agrees
    over a grid of policies, signs and sizes, both ends of NaN and overflow."""
    gammas = (-2, -1, -0.5, -0.1, -0.013, 0, 0.5, 1, 1.5, 10, "nan")
    powers = (-3, -2, -1, -0.5, 0, 0.75, 1, 2, 3)
    schedules = ['lr_policy: "fixed"']
    schedules += [f'lr_policy: "{p}" gamma: {g} stepsize: 7' for p in ("step", "sigmoid")
                  for g in gammas]
    schedules += [f'lr_policy: "exp" gamma: {g}' for g in gammas]
    schedules += [f'lr_policy: "multistep" gamma: {g} stepvalue: 3 stepvalue: 40 stepvalue: 41'
                  for g in gammas]
    schedules += [f'lr_policy: "inv" gamma: {g} power: {p}' for g in gammas for p in powers]
    schedules += [f'lr_policy: "poly" power: {p} max_iter: 300' for p in powers]
    for schedule in schedules:
        for base_lr in (0.01, 1e30):
            solver = parse_solver(f"base_lr: {base_lr} {schedule}")
            for iterations in (1, 2, 8, 77, 300):
                rates = learning_rates(solver, np.arange(iterations))
                ordinary = (np.isfinite(rates) & (rates >= 0)).all()
                try:
                    check_learning_rates(solver, iterations)
                    refused = False
                except NetSpecError:
                    refused = True
                assert refused != ordinary, (schedule, base_lr, iterations)


@pytest.mark.parametrize("schedule, first, stop, hint", [
    ('base_lr: 100 lr_policy: "fixed"', 50, 100,
     "the learning rate was at most base_lr 100 \\(lr_policy 'fixed'\\): lower base_lr"),
    ('base_lr: 0.1 lr_policy: "step" gamma: 0.1 stepsize: 10', 50, 100, "lower base_lr"),
    ('base_lr: 0.01 lr_policy: "exp" gamma: 2', 40, 50,
     "lr_policy 'exp' \\(base_lr 0.01, gamma 2.0\\) raised the learning rate to 5.629e\\+12, "
     "5.629e\\+14 x base_lr: make the schedule decay"),
    ('base_lr: 0.01 lr_policy: "inv" gamma: -0.009 power: 1', 100, 111, "raised the learning"),
])
def test_divergence_hint_blames_base_lr_only_when_the_schedule_does_not_rise(
        schedule, first, stop, hint):
    message = divergence_hint(parse_solver(schedule), first, stop)
    assert re.search(hint, message), message
    assert ("lower base_lr" in message) == ("raised" not in message)
