"""Train/deploy net derivation from stock Caffe nets, checked against the built pycaffe."""
import math
import os

import numpy as np
import pytest
from caffe.proto import caffe_pb2

from sparknet_ml import zoo
from sparknet_ml.net import (NetSpecError, accuracy_top_ks, data_layer_tops, data_transform,
                             deploy_net, filter_phase, infer_input_shape, net_to_text, parse_net,
                             resizes_images, resolve_transform, train_net)

# BVLC Caffe's examples/mnist/lenet_train_test.prototxt, verbatim (shipped in the zoo).
LENET_TRAIN_TEST = zoo.prototxt("lenet_train_test")
BODY = ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]


def names(net):
    return [layer.name for layer in net.layer]


def with_transform(text):
    """LENET_TRAIN_TEST with the TRAIN data layer's transform_param replaced by ``text``."""
    return LENET_TRAIN_TEST.replace("transform_param {\n    scale: 0.00390625\n  }", text, 1)


def test_filter_phase_follows_include_rules():
    original = parse_net(LENET_TRAIN_TEST)
    train = filter_phase(original, caffe_pb2.TRAIN)
    test = filter_phase(original, caffe_pb2.TEST)
    assert names(train) == ["mnist", *BODY, "loss"]
    assert names(test) == ["mnist", *BODY, "accuracy", "loss"]
    assert train.layer[0].data_param.batch_size == 64 and test.layer[0].data_param.batch_size == 100
    assert not any(layer.include or layer.exclude for layer in [*train.layer, *test.layer])
    assert (train.state.phase, test.state.phase) == (caffe_pb2.TRAIN, caffe_pb2.TEST)
    assert original == parse_net(LENET_TRAIN_TEST) and len(original.layer) == 11


def test_filter_phase_levels_stages_and_exclude():
    text = """
    layer { name: "a" type: "ReLU" include { min_level: 1 } }
    layer { name: "b" type: "ReLU" include { max_level: -1 } include { phase: TEST } }
    layer { name: "c" type: "ReLU" include { stage: "deploy" } }
    layer { name: "d" type: "ReLU" exclude { phase: TRAIN not_stage: "keep" } }
    layer { name: "e" type: "ReLU" exclude { stage: "deploy" } }
    """
    assert names(filter_phase(text, caffe_pb2.TRAIN)) == ["e"]
    assert names(filter_phase(text, caffe_pb2.TEST)) == ["b", "d", "e"]
    leveled = filter_phase(text, caffe_pb2.TRAIN, level=1, stages=["deploy", "keep"])
    assert names(leveled) == ["a", "c", "d"]
    with pytest.raises(NetSpecError, match="layer 'x': specify either include or exclude"):
        filter_phase('layer { name: "x" include { phase: TRAIN } exclude { phase: TEST } }',
                     caffe_pb2.TRAIN)
    with pytest.raises(NetSpecError, match="phase"):
        filter_phase(text, 7)


def test_data_layer_tops():
    assert data_layer_tops(LENET_TRAIN_TEST) == ("data", "label")
    two_inputs = ('layer { name: "data" type: "Input" top: "data" }\n'
                  'layer { name: "label" type: "Input" top: "label" }\n')
    assert data_layer_tops(two_inputs) == ("data", "label")
    legacy = ('input: "x" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2 '
              'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }')
    assert data_layer_tops(legacy) == ("x", None)  # upgraded into an Input layer, as Caffe does
    with pytest.raises(NetSpecError, match="has no data layer"):  # Caffe drops a shapeless input
        data_layer_tops('input: "x" layer { name: "r" type: "ReLU" bottom: "x" top: "r" }')
    with pytest.raises(NetSpecError, match="no data layer"):
        data_layer_tops('layer { name: "r" type: "ReLU" }')
    with pytest.raises(NetSpecError, match=r"3 blobs \['data', 'label', 'extra'\]"):
        data_layer_tops(two_inputs + 'layer { name: "x" type: "DummyData" top: "extra" }')


@pytest.mark.parametrize("text, shape", [
    ('layer { name: "d" type: "Input" top: "data" top: "label"'
     ' input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } } }', (1, 28, 28)),
    ('layer { name: "d" type: "Input" top: "label" top: "data"'
     ' input_param { shape { dim: 64 dim: 3 dim: 32 dim: 32 } } }', (3, 32, 32)),
    ('layer { name: "d" type: "Input" top: "data" input_param { shape { dim: 8 dim: 20 } } }', (20,)),
    ('input: "data" input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227', (3, 227, 227)),
    ('input: "data" input_shape { dim: 10 dim: 3 dim: 224 dim: 224 }', (3, 224, 224)),
    ('layer { name: "d" type: "MemoryData" top: "data" top: "label"'
     ' memory_data_param { batch_size: 4 channels: 1 height: 8 width: 8 } }', (1, 8, 8)),
    ('layer { name: "d" type: "DummyData" top: "data"'
     ' dummy_data_param { shape { dim: 2 dim: 5 } } }', (5,)),
    (LENET_TRAIN_TEST, None),
])
def test_infer_input_shape(text, shape):
    assert infer_input_shape(text) == shape


def test_infer_input_shape_of_zoo_nets():
    assert infer_input_shape(zoo.prototxt("lenet_train")) == (1, 28, 28)
    assert infer_input_shape(zoo.prototxt("cifar10_quick_train")) == (3, 32, 32)


TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def resolved(net, phase, shape=(1, 28, 28), mean_image=None):
    layer, param = data_transform(net, phase)
    return resolve_transform(layer, param, shape, mean_image, "mean.binaryproto")


def test_data_transform_per_phase():
    assert data_transform(LENET_TRAIN_TEST, TRAIN)[0] == "mnist"
    assert resolved(LENET_TRAIN_TEST, TRAIN).scale == 0.00390625
    plain = resolved(zoo.prototxt("lenet_train"), TRAIN)
    assert (plain.scale, plain.mean_values, plain.crop, plain.mirror) == (1.0, (), None, False)
    means = with_transform(
        "transform_param { scale: 0.1 mean_value: 104 mean_value: 117 mean_value: 123 "
        "crop_size: 24 mirror: true }")
    train = resolved(means, TRAIN, (3, 28, 28))
    assert (train.scale, train.mean_values, train.crop, train.mirror) == (
        0.1, (104.0, 117.0, 123.0), (24, 24), True)
    test = resolved(means, TEST, (3, 28, 28))  # the TEST layer keeps LeNet's own transform
    assert (test.scale, test.crop, test.mirror) == (0.00390625, None, False)


@pytest.mark.parametrize("transform, message", [
    ('transform_param { mean_file: "m.binaryproto" mean_value: 1 }',
     "both mean_file .* and mean_value"),
    ("transform_param { force_color: true force_gray: true }", "both force_color and force_gray"),
    ("transform_param { crop_h: 20 }", "only one of crop_h"),
    ("transform_param { emit_constraint { } }", "emit_constraint is not supported"),
])
def test_data_transform_rejects_what_caffe_refuses_or_we_do_not_apply(transform, message):
    with pytest.raises(NetSpecError, match=f"layer 'mnist': .*{message}"):
        data_transform(with_transform(transform), TRAIN)


@pytest.mark.parametrize("transform, shape, mean, message", [
    ("transform_param { crop_size: 30 }", (1, 28, 28), None, "30x30 crop is larger .* 28x28"),
    ("transform_param { crop_h: 20 crop_w: 29 }", (1, 28, 28), None, "20x29 crop is larger"),
    ("transform_param { mirror: true }", (784,), None, "need examples of shape \\[C, H, W\\]"),
    ("transform_param { mean_value: 1 mean_value: 2 }", (3, 28, 28), None,
     "2 mean_value entries for 3"),
    ("transform_param { force_color: true }", (1, 28, 28), None, "force_color asks for 3-channel"),
    ('transform_param { mean_file: "m" }', (1, 28, 28), np.zeros((1, 27, 28), np.float32),
     "mean file mean.binaryproto holds a \\[1, 27, 28\\] mean"),
])
def test_resolve_transform_checks_the_stored_example(transform, shape, mean, message):
    with pytest.raises(NetSpecError, match=f"layer 'mnist': .*{message}"):
        resolved(with_transform(transform), TRAIN, shape, mean)


def test_resizes_images_follows_imagedata_new_height_and_width():
    assert resizes_images(zoo.prototxt("finetune_flickr_style_train_val"))
    assert not resizes_images(zoo.prototxt("bvlc_reference_caffenet_train_val"))  # LMDB Data


def test_accuracy_top_ks_of_the_stock_nets():
    assert accuracy_top_ks(zoo.prototxt("bvlc_googlenet_train_val")) == {1, 5}
    assert accuracy_top_ks(zoo.prototxt("bvlc_reference_caffenet_train_val")) == {1}
    assert accuracy_top_ks(zoo.prototxt("lenet_train")) == set()


def test_data_transform_rejects_legacy_data_param_fields():
    legacy = LENET_TRAIN_TEST.replace("backend: LMDB", "backend: LMDB\n    scale: 0.5", 1)
    with pytest.raises(NetSpecError, match=r"layer 'mnist': data_param.scale is deprecated"):
        data_transform(legacy, TRAIN)


def test_train_net_replaces_data_layers():
    net = train_net(LENET_TRAIN_TEST, [1, 28, 28], 32)
    assert names(net) == ["data", *BODY, "loss"]
    data = net.layer[0]
    assert data.type == "Input" and list(data.top) == ["data", "label"]
    assert [list(s.dim) for s in data.input_param.shape] == [[32, 1, 28, 28], [32]]
    assert not data.include and not data.exclude and not data.HasField("transform_param")
    assert net.state.phase == caffe_pb2.TRAIN
    assert net.layer[1:] == filter_phase(LENET_TRAIN_TEST, caffe_pb2.TRAIN).layer[1:]


def test_train_net_errors():
    with pytest.raises(NetSpecError, match="no loss layer"):
        train_net(LENET_TRAIN_TEST.replace("SoftmaxWithLoss", "Softmax"), [1, 28, 28], 8)
    with pytest.raises(NetSpecError, match="no data layer"):
        train_net(LENET_TRAIN_TEST.replace('type: "Data"', 'type: "ReLU"'), [1, 28, 28], 8)
    with pytest.raises(NetSpecError, match="batch_size"):
        train_net(LENET_TRAIN_TEST, [1, 28, 28], 0)
    with pytest.raises(NetSpecError, match="input_shape"):
        train_net(LENET_TRAIN_TEST, [], 8)
    python_loss = LENET_TRAIN_TEST.replace('type: "SoftmaxWithLoss"', 'type: "Python"')
    with pytest.raises(NetSpecError, match="layer 'loss' has type 'Python'"):
        train_net(python_loss + 'layer { name: "l2" type: "EuclideanLoss" bottom: "ip2" bottom: "ip2" }',
                  [1, 28, 28], 8)


def test_deploy_net_drops_loss_and_label_consumers():
    deploy = deploy_net(LENET_TRAIN_TEST, [1, 28, 28], 16)
    assert names(deploy.net) == ["data", *BODY]
    assert list(deploy.net.layer[0].top) == ["data"]
    assert [list(s.dim) for s in deploy.net.layer[0].input_param.shape] == [[16, 1, 28, 28]]
    assert (deploy.output_blob, deploy.classification) == ("ip2", True)
    assert deploy.net.state.phase == caffe_pb2.TEST


def test_deploy_net_removes_dependents_transitively_and_handles_other_losses():
    text = zoo.prototxt("lenet_train").replace("SoftmaxWithLoss", "EuclideanLoss") + """
    layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }
    layer { name: "acc2" type: "Power" bottom: "acc" top: "acc2" }
    layer { name: "loss_user" type: "Power" bottom: "loss" top: "loss_user" }
    """
    deploy = deploy_net(text, [1, 28, 28], 4)
    assert names(deploy.net) == ["data", *BODY]
    assert (deploy.output_blob, deploy.classification) == ("ip2", False)


def test_deploy_net_without_loss_uses_last_top():
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"'
            ' inner_product_param { num_output: 3 } }\n'
            'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n')
    deploy = deploy_net(text, [4], 2)
    assert (deploy.output_blob, deploy.classification) == ("prob", False)
    assert names(deploy.net) == ["data", "ip", "prob"]


def test_deploy_net_rejects_prediction_that_needs_label():
    text = zoo.prototxt("lenet_train") + (
        'layer { name: "mix" type: "Concat" bottom: "ip2" bottom: "label" top: "mix" }\n'
        'layer { name: "loss2" type: "EuclideanLoss" bottom: "mix" bottom: "mix" top: "loss2" }\n')
    with pytest.raises(NetSpecError, match="loss layer 'loss2': its first bottom 'mix' depends on"):
        deploy_net(text, [1, 28, 28], 4)


@pytest.fixture
def caffe_cpu():
    os.environ["GLOG_minloglevel"] = "2"
    import caffe
    caffe.set_mode_cpu()
    return caffe


def build(caffe, tmp_path, net, phase):
    path = tmp_path / f"{net.name}_{phase}.prototxt"
    path.write_text(net_to_text(net))
    return caffe.Net(str(path), phase)


def test_pycaffe_accepts_derived_nets(caffe_cpu, tmp_path):
    rng = np.random.default_rng(0)
    train = build(caffe_cpu, tmp_path, train_net(LENET_TRAIN_TEST, [1, 28, 28], 8), caffe_cpu.TRAIN)
    train.blobs["data"].data[...] = rng.random((8, 1, 28, 28))
    train.blobs["label"].data[...] = rng.integers(0, 10, size=8)
    loss = float(train.forward()["loss"])
    assert math.isfinite(loss) and 0.5 < loss < 10

    deploy = deploy_net(LENET_TRAIN_TEST, [1, 28, 28], 5)
    scorer = build(caffe_cpu, tmp_path, deploy.net, caffe_cpu.TEST)
    assert "label" not in scorer.blobs and "loss" not in scorer.blobs
    scorer.blobs["data"].data[...] = rng.random((5, 1, 28, 28))
    out = scorer.forward()
    assert list(out) == [deploy.output_blob] and out["ip2"].shape == (5, 10)
    assert {k: v[0].data.shape for k, v in scorer.params.items()} == \
        {k: v[0].data.shape for k, v in train.params.items()}


def test_cudnn_engines_become_the_default_and_build_on_this_caffe():
    """Model-zoo files often say ``engine: CUDNN``; a CPU-only Caffe aborts on it."""
    text = (LENET_TRAIN_TEST
            .replace("convolution_param {\n    num_output: 20",
                     "convolution_param {\n    engine: CUDNN\n    num_output: 20", 1)
            .replace("pooling_param {\n    pool: MAX", "pooling_param {\n    engine: CUDNN\n"
                     "    pool: MAX", 1)
            .replace('type: "ReLU"', 'type: "ReLU"\n  relu_param { engine: CAFFE }', 1))
    assert text.count("engine: CUDNN") == 2
    for net in (train_net(text, [1, 28, 28], 8), deploy_net(text, [1, 28, 28], 8).net):
        layers = {layer.name: layer for layer in net.layer}
        assert not layers["conv1"].convolution_param.HasField("engine")
        assert not layers["pool1"].pooling_param.HasField("engine")
        assert layers["relu1"].relu_param.engine == caffe_pb2.ReLUParameter.CAFFE  # kept
    from sparknet_ml.engine.probe import check_caffe_builds
    check_caffe_builds(net_to_text(train_net(text, [1, 28, 28], 8)),
                       zoo.prototxt("lenet_solver"), 8)


@pytest.mark.parametrize("renamed, phase", [
    ("conv2", "TRAIN"),  # two learnable layers named conv1: the example
    ("relu1", "TEST"),   # a learnable and a plain layer: a variant
])
def test_two_layers_of_one_name_in_a_phase_are_refused(renamed, phase):
    """Hardening issue, item 2: one of two layers named alike was never averaged or saved."""
    net = LENET_TRAIN_TEST.replace(f'name: "{renamed}"', 'name: "conv1"', 1)
    derive = train_net if phase == "TRAIN" else deploy_net
    with pytest.raises(NetSpecError, match=f"two layers are named 'conv1' .* in the {phase} phase"):
        derive(net, [1, 28, 28], 4)


def test_layers_of_one_name_in_different_phases_are_stock_caffe():
    assert [layer.name for layer in parse_net(LENET_TRAIN_TEST).layer].count("mnist") == 2
    train_net(LENET_TRAIN_TEST, [1, 28, 28], 4)
    deploy_net(LENET_TRAIN_TEST, [1, 28, 28], 4)


@pytest.mark.parametrize("loss, output, probabilities", [
    ("SoftmaxWithLoss", "ip2", False), ("HingeLoss", "ip2", False),
    ("MultinomialLogisticLoss", "prob", True)])
def test_class_index_losses_make_classification_nets(loss, output, probabilities):
    """Hardening issue, item 4: only SoftmaxWithLoss nets were classification nets."""
    net = LENET_TRAIN_TEST.replace('type: "SoftmaxWithLoss"\n  bottom: "ip2"',
                                   f'type: "{loss}"\n  bottom: "{output}"')
    if output == "prob":  # the loss reads a Softmax's probabilities
        net = net.replace('layer {\n  name: "loss"', 'layer { name: "prob" type: "Softmax" '
                          'bottom: "ip2" top: "prob" }\nlayer {\n  name: "loss"', 1)
    deploy = deploy_net(net, [1, 28, 28], 4)
    assert (deploy.output_blob, deploy.classification, deploy.probabilities) == (
        output, True, probabilities)
