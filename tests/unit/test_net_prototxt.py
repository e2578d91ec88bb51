"""Safe prototxt parsing and the layer allowlist."""
import pathlib

import pytest
from caffe.proto import caffe_pb2

from sparknet_ml import zoo
from sparknet_ml.net import (ALLOWED_LAYER_TYPES, DATA_LAYER_TYPES, NetSpecError, check_bottoms,
                             check_layers, check_solver, net_to_text, parse_net, parse_solver)

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


def test_v1_layers_are_rejected_with_upgrade_hint():
    v1 = 'name: "old"\nlayers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" }\n'
    with pytest.raises(NetSpecError, match="V1 'layers'.*'conv1'.*upgrade_net_proto_text"):
        parse_net(v1)


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
])
def test_solver_fields_caffe_would_check_are_refused_by_name(text, iterations, message):
    """Hardening issue, items 6 and 8: each of these aborted a task, trained with a negative
    learning rate, or was blamed on base_lr."""
    with pytest.raises(NetSpecError, match=message):
        check_solver(parse_solver("base_lr: 0.01 " + text), iterations)


def test_stock_solvers_pass_the_solver_checks():
    for name in ("lenet_solver", "cifar10_quick_solver", "bvlc_googlenet_solver",
                 "bvlc_reference_caffenet_solver"):
        check_solver(parse_solver(zoo.prototxt(name)), 40 * 50)
    check_solver(parse_solver('base_lr: 0.01 lr_policy: "poly" power: 1 max_iter: 2000'), 2000)
