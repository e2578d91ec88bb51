"""The NetParam DSL builds the same nets as hand-written prototxt."""
import os

import numpy as np
import pytest
from caffe.proto import caffe_pb2

from sparknet_ml import zoo
from sparknet_ml.net import (AccuracyLayer, ConcatLayer, ConvolutionLayer, DropoutLayer,
                             InnerProductLayer, NetParam, NetSpecError, Pooling, PoolingLayer, RDDLayer,
                             ReLULayer, SigmoidLayer, SoftmaxLayer, SoftmaxWithLoss, TanHLayer,
                             data_layer_tops, deploy_net, infer_input_shape, net_to_text, parse_net,
                             train_net)


def lenet(batch=64):
    """SparkNet's README LeNet, in the DSL."""
    return NetParam("LeNet",
                    RDDLayer("data", shape=[batch, 1, 28, 28]),
                    RDDLayer("label", shape=[batch, 1]),
                    ConvolutionLayer("conv1", ["data"], kernel=(5, 5), numOutput=20),
                    PoolingLayer("pool1", ["conv1"], pooling=Pooling.Max, kernel=(2, 2), stride=(2, 2)),
                    ConvolutionLayer("conv2", ["pool1"], kernel=(5, 5), numOutput=50),
                    PoolingLayer("pool2", ["conv2"], pooling=Pooling.Max, kernel=(2, 2), stride=(2, 2)),
                    InnerProductLayer("ip1", ["pool2"], numOutput=500),
                    ReLULayer("relu1", ["ip1"]),
                    InnerProductLayer("ip2", ["relu1"], numOutput=10),
                    SoftmaxWithLoss("loss", ["ip2", "label"]))


def structure(net):
    """Each layer as (name, type, producing layers of its bottoms, its parameters), blob names aside."""
    producer, rows = {}, []
    for layer in net.layer:
        params = caffe_pb2.LayerParameter()
        params.CopyFrom(layer)
        for field in ("name", "type", "bottom", "top"):
            params.ClearField(field)
        rows.append((layer.name, layer.type, [producer[b] for b in layer.bottom], params))
        producer.update({top: layer.name for top in layer.top})
    return rows


def test_dsl_lenet_is_a_real_net_param():
    net = lenet()
    assert isinstance(net, caffe_pb2.NetParameter) and net.name == "LeNet"
    inputs = [(layer.type, list(layer.top)) for layer in net.layer[:2]]
    assert inputs == [("Input", ["data"]), ("Input", ["label"])]
    relu = net.layer[7]
    assert (list(relu.bottom), list(relu.top)) == (["ip1"], ["relu1"])
    assert parse_net(net_to_text(net)) == net
    assert data_layer_tops(net) == ("data", "label")
    assert infer_input_shape(net) == (1, 28, 28)


def test_dsl_lenet_matches_zoo_lenet():
    dsl = structure(train_net(lenet(), [1, 28, 28], 64))
    zoo_net = structure(train_net(zoo.prototxt("lenet_train"), [1, 28, 28], 64))
    assert [row[:3] for row in dsl] == [row[:3] for row in zoo_net]
    assert [row[3] for row in dsl] == [row[3] for row in zoo_net]
    conv1 = dsl[1][3].convolution_param
    assert (conv1.num_output, list(conv1.kernel_size), conv1.weight_filler.type) == (20, [5], "xavier")
    assert dsl[2][3].pooling_param.pool == caffe_pb2.PoolingParameter.MAX


def test_dsl_lenet_builds_in_pycaffe(tmp_path):
    os.environ["GLOG_minloglevel"] = "2"
    import caffe
    caffe.set_mode_cpu()
    deploy = deploy_net(lenet(), [1, 28, 28], 3)
    assert (deploy.output_blob, deploy.classification) == ("ip2", True)
    path = tmp_path / "deploy.prototxt"
    path.write_text(net_to_text(deploy.net))
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).random((3, 1, 28, 28))
    assert net.forward()["ip2"].shape == (3, 10)
    assert net.params["conv2"][0].data.shape == (50, 20, 5, 5)
    assert net.params["ip1"][0].data.shape == (500, 800)


def test_dsl_options():
    conv = ConvolutionLayer("c", "x", kernel=(3, 5), numOutput=4, stride=2, pad=(1, 2),
                            weightFiller=caffe_pb2.FillerParameter(type="gaussian", std=0.01),
                            biasFiller=None)
    p = conv.convolution_param
    assert (list(p.kernel_size), list(p.stride), list(p.pad)) == ([3, 5], [2], [1, 2])
    assert (p.weight_filler.type, p.weight_filler.std) == ("gaussian", pytest.approx(0.01))
    assert not p.HasField("bias_filler")
    assert [s.lr_mult for s in conv.param] == [1, 2] and list(conv.bottom) == ["x"]
    pool = PoolingLayer("p", ["c"], pooling=Pooling.Average, kernel=(3, 2), stride=(2, 1), pad=1)
    q = pool.pooling_param
    assert q.pool == caffe_pb2.PoolingParameter.AVE
    assert (q.kernel_h, q.kernel_w, q.stride_h, q.stride_w, q.pad) == (3, 2, 2, 1, 1)
    assert not q.HasField("kernel_size")
    assert DropoutLayer("d", ["p"], ratio=0.3).dropout_param.dropout_ratio == pytest.approx(0.3)
    assert ConcatLayer("cat", ["a", "b"], axis=2).concat_param.axis == 2
    types = [f(n, ["x"]).type for n, f in [("s", SigmoidLayer), ("t", TanHLayer), ("sm", SoftmaxLayer),
                                            ("acc", AccuracyLayer)]]
    assert types == ["Sigmoid", "TanH", "Softmax", "Accuracy"]


def test_dsl_errors_name_the_layer():
    with pytest.raises(NetSpecError, match="layer 'ip': bottom 'dat'"):
        NetParam("bad", RDDLayer("data", [4, 3]), InnerProductLayer("ip", ["dat"], numOutput=2))
    with pytest.raises(NetSpecError, match="layer 'data': shape"):
        RDDLayer("data", [4, 0])
    with pytest.raises(NetSpecError, match="layer 'c': expected an int or an"):
        ConvolutionLayer("c", ["x"], kernel=(1, 2, 3), numOutput=1)
