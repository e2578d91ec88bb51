"""Driver-side caps and param checks that need no Spark session: prototxt size, blob shapes,
caffemodel size, input batch memory, positive params."""
import math
import re

import numpy as np
import pytest

from sparknet_ml import SparkNetEstimator, storage, zoo
from sparknet_ml.driver import columns
from sparknet_ml.driver.columns import MAX_INPUT_BATCH_BYTES, check_input_memory
from sparknet_ml.driver.planning import plan_nets
from sparknet_ml.net import NetSpecError, deploy_net, parse_net, parse_solver, train_net
from sparknet_ml.net.layers import MAX_BLOB_ELEMENTS, check_blob_shapes
from sparknet_ml.net.prototxt import MAX_PROTOTXT_BYTES
from sparknet_ml.persistence.caffemodel import (MAX_CAFFEMODEL_BYTES, caffemodel_bytes,
                                                parse_caffemodel, read_caffemodel)


def test_cap_values():
    assert MAX_PROTOTXT_BYTES == 16 * 2 ** 20
    assert MAX_BLOB_ELEMENTS == 2 ** 28
    assert MAX_CAFFEMODEL_BYTES == 2 * 2 ** 30
    assert MAX_INPUT_BATCH_BYTES == 2 ** 30


def _padded(head: str, size: int) -> str:
    """Valid prototxt ``head`` followed by a comment, ``size`` bytes in all."""
    head += "\n#"
    return head + "#" * (size - len(head))


@pytest.mark.parametrize("parse", [parse_net, parse_solver])
def test_prototxt_over_the_size_cap_is_refused_before_parsing(parse, tmp_path):
    head = 'name: "big"' if parse is parse_net else "base_lr: 0.01"
    assert parse(_padded(head, MAX_PROTOTXT_BYTES))  # at the cap: parses (a comment)
    over = _padded(head, MAX_PROTOTXT_BYTES + 1)
    with pytest.raises(NetSpecError, match=f"text: {MAX_PROTOTXT_BYTES + 1} bytes of prototxt, "
                                           "over the .* cap .MAX_PROTOTXT_BYTES."):
        parse(over)
    path = tmp_path / "big.prototxt"
    path.write_text(over)
    for value in (path, str(path)):
        with pytest.raises(ValueError, match="big.prototxt: .* over the .* cap"):
            parse(value)


@pytest.mark.parametrize("layer, owner, shape", [
    ('type: "Input" top: "data" input_param { shape { dim: 64 dim: 3 dim: 2048 dim: 2048 } }',
     "'big' (Input)", [64, 3, 2048, 2048]),
    ('type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 } shape { dim: 268435457 } }',
     "'big' (DummyData)", [268435457]),
    ('type: "DummyData" top: "data" dummy_data_param { num: 16 channels: 3 height: 4096 '
     'width: 4096 }', "'big' (DummyData)", [16, 3, 4096, 4096]),
    ('type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 1024 '
     'channels: 3 height: 512 width: 512 }', "'big' (MemoryData)", [1024, 3, 512, 512]),
    ('type: "Parameter" top: "w" parameter_param { shape { dim: 65536 dim: 65536 } }',
     "'big' (Parameter)", [65536, 65536]),
])
def test_blob_shapes_over_the_element_cap_name_layer_and_shape(layer, owner, shape):
    net = parse_net(f'layer {{ name: "big" {layer} }}')
    assert math.prod(shape) > MAX_BLOB_ELEMENTS
    with pytest.raises(NetSpecError, match=rf"layer {re.escape(owner)}: shape \[{', '.join(map(str, shape))}"
                                           rf"\] has {math.prod(shape)} elements, over the "
                                           rf"{MAX_BLOB_ELEMENTS} cap"):
        check_blob_shapes(net)


def test_legacy_inputs_and_negative_dims_are_checked():
    with pytest.raises(NetSpecError,
                       match=r"layer 'input' \(Input\): shape \[1, 3, 65536, 65536\]"):
        check_blob_shapes(parse_net('input: "data" input_dim: 1 input_dim: 3 '
                                    'input_dim: 65536 input_dim: 65536'))
    with pytest.raises(NetSpecError, match=r"'d' \(Input\): shape \[64, -1\] has a negative"):
        check_blob_shapes(parse_net('layer { name: "d" type: "Input" top: "data" '
                                    'input_param { shape { dim: 64 dim: -1 } } }'))
    check_blob_shapes(parse_net(zoo.prototxt("lenet_train")))
    check_blob_shapes(parse_net(zoo.prototxt("cifar10_quick_train")))


@pytest.mark.parametrize("derive", [train_net, deploy_net])
def test_batch_times_input_shape_is_checked_against_the_blob_cap(derive):
    derive(zoo.prototxt("lenet_train"), [1, 28, 28], 2 ** 28 // 784)
    with pytest.raises(NetSpecError, match=r"layer 'data' \(Input fed from the DataFrame, "
                                           r"\[batch_size, \*input_shape\]\): shape "
                                           r"\[342393, 1, 28, 28\]"):
        derive(zoo.prototxt("lenet_train"), [1, 28, 28], 2 ** 28 // 784 + 1)


def test_check_input_memory_names_batch_size_and_input_shape():
    check_input_memory(256, (1, 1024, 1024))  # exactly 1 GiB
    with pytest.raises(ValueError, match=r"batchSize=257 x inputShape=\[1, 1024, 1024\] x 4 "
                                         r"bytes = 1077936128 bytes per input batch, over the "
                                         r"1073741824 bytes cap"):
        check_input_memory(257, (1, 1024, 1024))


def lenet(**params):
    return SparkNetEstimator(**{"netPrototxt": zoo.prototxt("lenet_train"),
                                "solverPrototxt": zoo.prototxt("lenet_solver"), **params})


def test_plan_nets_checks_input_memory_and_blob_shapes_before_deriving(monkeypatch):
    calls = []
    monkeypatch.setattr(columns, "check_input_memory",
                        lambda *a: calls.append(a) or check_input_memory(*a))
    with pytest.raises(ValueError, match=r"batchSize=128 x inputShape=\[3, 1024, 1024\]"):
        plan_nets(lenet(inputShape=[3, 1024, 1024], batchSize=128))
    assert calls == [(128, (3, 1024, 1024))]
    big = zoo.prototxt("lenet_train").replace("dim: 28 dim: 28", "dim: 28000 dim: 28000")
    with pytest.raises(NetSpecError, match=r"layer 'data' \(Input\): shape \[64, 1, 28000, "
                                           r"28000\]"):
        plan_nets(lenet().setNetPrototxt(big))


@pytest.mark.parametrize("name", ["batchSize", "syncInterval", "numWorkers",
                                  "validationInterval"])
@pytest.mark.parametrize("value", [0, -3])
def test_positive_int_params_reject_non_positive_values(name, value):
    with pytest.raises(TypeError, match=f'param "{name}". must be a positive integer, '
                                        f"got {value}"):
        lenet(**{name: value})


@pytest.mark.parametrize("value", [0.0, -0.01, float("nan"), float("inf"), float("-inf")])
def test_base_lr_param_rejects_non_positive_nan_and_inf(value):
    with pytest.raises(TypeError, match=f'param "baseLr". must be a positive finite number, '
                                        f"got {value}"):
        lenet(baseLr=value)


@pytest.mark.parametrize("value", [0, -1])
def test_max_iter_must_be_positive(value):
    with pytest.raises(ValueError, match=f"maxIter must be a positive integer, got {value}"):
        plan_nets(lenet(maxIter=value))


@pytest.mark.parametrize("base_lr", ["0", "-0.1", "nan", "-inf", "inf"])
def test_solver_base_lr_must_be_positive(base_lr):
    est = lenet(solverPrototxt=f'base_lr: {base_lr} lr_policy: "fixed"')
    with pytest.raises(ValueError, match="solver base_lr must be positive and finite, got "
                                         f"{float(base_lr)}"):
        plan_nets(est)
    assert plan_nets(est.copy({est.baseLr: 0.5})).train.solver_text.startswith("base_lr: 0.5")


def test_caffemodel_over_the_size_cap_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.caffemodel"
    with open(path, "wb") as f:
        f.truncate(MAX_CAFFEMODEL_BYTES + 1)  # sparse: no disk used
    monkeypatch.setattr(storage._Local, "read", lambda *a: pytest.fail("read the file"))
    with pytest.raises(ValueError, match=f"huge.caffemodel: {MAX_CAFFEMODEL_BYTES + 1} bytes, "
                                         "over the .* cap .MAX_CAFFEMODEL_BYTES."):
        read_caffemodel(str(path))


def test_truncated_or_inconsistent_caffemodel_is_refused(tmp_path):
    net = parse_net('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }')
    weights = {"ip": [np.ones((3, 16), np.float32), np.zeros(3, np.float32)]}
    data = caffemodel_bytes(net, weights)
    assert {k: [b.shape for b in v] for k, v in parse_caffemodel(data).items()} == {
        "ip": [(3, 16), (3,)]}
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.caffemodel: not a caffemodel .truncated or corrupt"):
        read_caffemodel(str(path))
    bad = parse_net('layer { name: "ip" type: "InnerProduct" blobs { '
                    'shape { dim: 2 dim: 2 } data: 1 } }')
    with pytest.raises(ValueError, match=r"layer 'ip': blob of shape \(2, 2\) holds 1 values"):
        parse_caffemodel(bad.SerializeToString())


@pytest.mark.parametrize("params, message", [
    ({"outputBlobs": ["ip9"]}, "outputBlobs: the deploy net has no blob 'ip9'"),
    ({"outputBlobs": ["ip1", "ip1"]}, "name\\(s\\) 'ip1' given twice"),
    ({"probabilityCol": "prediction"}, "'prediction' given twice"),
    ({"outputBlobs": ["ip1"], "rawPredictionCol": "ip1"}, "'ip1' given twice"),
])
def test_output_blobs_and_column_names_are_checked_before_any_job(params, message):
    """Hardening issue, item 7: these failed after the fit, or with a Java error."""
    from sparknet_ml import SparkNetEstimator, zoo
    from sparknet_ml.driver.columns import check_outputs
    from sparknet_ml.net import deploy_net
    stage = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train"),
                              solverPrototxt=zoo.prototxt("lenet_solver"), **params)
    deploy = deploy_net(stage.getNetPrototxt(), [1, 28, 28], 4)
    with pytest.raises(ValueError, match=message):
        check_outputs(stage, deploy.net, deploy.classification)


@pytest.mark.parametrize("sync_interval, batch", [(10 ** 9, 64), (2 ** 20, 32)])
def test_a_round_drawing_too_many_examples_is_refused(sync_interval, batch):
    """Hardening issue, item 8: syncInterval=10**9 allocated 119 GiB inside a task."""
    with pytest.raises(ValueError, match=f"syncInterval={sync_interval} x batchSize={batch}"):
        columns.check_round_size(sync_interval, batch)
    columns.check_round_size(1000, 256)


def test_a_deploy_net_caffe_cannot_build_is_a_value_error_with_caffes_message():
    """Hardening issue, items 9 and 14: scoring aborted with only "Fatal Python error:
    Aborted"; the probe's message lost the layer."""
    from sparknet_ml.engine.probe import deploy_blob_shapes
    broken = ('layer { name: "data" type: "Input" top: "data" '
              'input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }\n'
              'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
              'convolution_param { num_output: 1 kernel_size: 5 } }')
    with pytest.raises(ValueError, match="Caffe cannot build this net: layer 'c': Check failed"):
        deploy_blob_shapes(broken)


def test_deploy_blob_shapes_come_from_caffe():
    from sparknet_ml.engine.probe import deploy_blob_shapes
    from sparknet_ml.engine.solver import net_with_batch
    from sparknet_ml.net import deploy_net, net_to_text
    deploy = deploy_net(zoo.prototxt("lenet_train"), [1, 28, 28], 4)
    shapes = deploy_blob_shapes(net_to_text(net_with_batch(net_to_text(deploy.net), 7)))
    assert shapes["data"] == (7, 1, 28, 28) and shapes["ip2"] == (7, 10)
