"""Nets, caffemodels and solvers in Caffe's deprecated formats, upgraded by Caffe's own
UpgradeNetAsNeeded / UpgradeSolverAsNeeded (the pycaffe-upgrade-proto patch): public V1 files
of BVLC's history and the model zoo (tests/zoo_nets/SOURCES.md), and a V1 caffemodel written
with pycaffe's protobuf in the layout old Caffe saved (V1 layers, 4-D legacy blob dims)."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from sparknet_ml import cli
from sparknet_ml import net as netlib
from sparknet_ml.engine.solver import prototxt_file
from sparknet_ml.net.prototxt import NetSpecError, UpgradedFormatWarning
from sparknet_ml.persistence.caffemodel import read_caffemodel

from .conftest import caffe

ZOO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "zoo_nets")
V1_FILES = ["vgg16_v1", "vgg19_v1", "caffenet_v1", "alexnet_v1", "googlenet_v1", "nin_v1",
            "lenet_train_test_v1"]


def zoo_file(name: str) -> str:
    return os.path.join(ZOO, f"{name}.prototxt")


def upgraded(value):
    with pytest.warns(UpgradedFormatWarning) as record:
        net = netlib.parse_net(value)
    return net, str(record[0].message)


@pytest.mark.parametrize("name", V1_FILES)
def test_v1_files_read_as_caffe_reads_them(name):
    net, message = upgraded(zoo_file(name))
    assert "V1 'layers'" in message
    assert not net.layers and net.layer
    caffe.set_mode_cpu()
    for phase in (caffe.TEST, caffe.TRAIN):  # the layers Caffe builds from the V1 file itself
        mine = netlib.filter_phase(net, phase)
        want = [(layer.name, layer.type) for layer in mine.layer]
        if any(layer.type == "Data" for layer in mine.layer):
            continue  # Caffe would open the file's LevelDB/LMDB sources
        ref = caffe.Net(zoo_file(name), phase)
        built = [(n, layer.type) for n, layer in zip(ref._layer_names, ref.layers)
                 if not (layer.type == "Split" and n.endswith("_split"))]  # Caffe's own splits
        assert built == want


def test_legacy_fields_are_upgraded_and_named():
    net, message = upgraded(zoo_file("lenet_train_test_v1"))
    assert "data transformation fields" in message
    data = [layer for layer in net.layer if layer.type == "Data"]
    assert len(data) == 2 and all(d.transform_param.scale == pytest.approx(1 / 256) for d in data)
    assert not any(d.data_param.HasField("scale") for d in data)
    conv1 = next(layer for layer in net.layer if layer.name == "conv1")
    assert [p.lr_mult for p in conv1.param] == [1, 2]  # V1's blobs_lr
    vgg, message = upgraded(zoo_file("vgg16_v1"))
    assert "'input' fields" in message
    assert vgg.layer[0].type == "Input" and list(vgg.layer[0].input_param.shape[0].dim) == [
        10, 3, 224, 224]
    assert netlib.infer_input_shape(vgg) == (3, 224, 224)


def test_current_nets_are_not_touched_or_warned_about():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = netlib.parse_net(zoo_file("squeezenet11"))
    assert net.layer[0].type == "Input"


@pytest.mark.parametrize("text, message", [
    ('layer { name: "a" type: "Input" top: "x" } layers { name: "b" type: RELU }',
     "both 'layer' and V1 'layers'"),
    ('layers { layer { name: "conv" type: "conv" } }', "'conv' is in Caffe's V0 format"),
    ('input: "a" input: "b" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',
     "2 'input' fields and 4 'input_dim'; give four per input"),
    ('input: "a" input_shape { dim: 1 } input_shape { dim: 2 }',
     "1 'input' fields and 2 'input_shape'"),
])
def test_what_caffes_upgrade_aborts_on_is_refused_first(text, message):
    with pytest.raises(NetSpecError, match=message):
        netlib.parse_net(text)


def test_solver_type_enum_is_upgraded():
    with pytest.warns(UpgradedFormatWarning, match="'solver_type'"):
        solver = netlib.parse_solver(zoo_file("nesterov_solver_v1"))
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")
    with pytest.raises(NetSpecError, match="both the deprecated solver_type .NESTEROV. and type"):
        netlib.parse_solver('solver_type: NESTEROV type: "Adam" base_lr: 0.1')


def test_every_v1_layer_type_upgrades_without_aborting():
    """Caffe's UpgradeV1LayerType LOG(FATAL)s on a type it does not know: every V1 enum value
    goes through it in a child process (an abort fails this test, not the run)."""
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from caffe.proto import caffe_pb2\n"
            "from sparknet_ml.net.prototxt import upgrade_net\n"
            "for name, value in caffe_pb2.V1LayerParameter.LayerType.items():\n"
            "    net = caffe_pb2.NetParameter()\n"
            "    net.layers.add(name='x', type=value)\n"
            "    print(name, repr(upgrade_net(net).layer[0].type))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    types = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert types["CONVOLUTION"] == "'Convolution'" and types["SOFTMAX_LOSS"] == "'SoftmaxWithLoss'"
    assert len(types) == len(caffe.proto.caffe_pb2.V1LayerParameter.LayerType.items())


def v1_caffemodel(path, v1_text: str, weights: dict) -> None:
    """A caffemodel as Caffe wrote them before 2015: the V1 net with every learnable blob
    inside its ``layers`` entry, shaped by the 4-D legacy num/channels/height/width."""
    from google.protobuf import text_format
    model = text_format.Parse(v1_text, caffe.proto.caffe_pb2.NetParameter())
    for layer in model.layers:
        for value in weights.get(layer.name, []):
            dims = (1,) * (4 - value.ndim) + value.shape
            blob = layer.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
            blob.data.extend(value.ravel().tolist())
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def test_a_v1_caffemodel_loads_as_caffe_loads_it(tmp_path):
    with open(zoo_file("lenet_train_test_v1")) as f:
        v1_text = f.read()
    with pytest.warns(UpgradedFormatWarning):
        deploy = netlib.deploy_net(v1_text, (1, 28, 28), 4)
    text = netlib.net_to_text(deploy.net)
    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    with prototxt_file(text) as path:
        ref = caffe.Net(path, caffe.TEST)
    weights = {name: [rng.standard_normal(b.data.shape).astype(np.float32) * 0.1 for b in blobs]
               for name, blobs in ref.params.items()}
    v1_path = str(tmp_path / "lenet_v1.caffemodel")
    v1_caffemodel(v1_path, v1_text, weights)
    ref.copy_from(v1_path)  # Caffe's own loader: upgrade + legacy blob shapes
    with pytest.warns(UpgradedFormatWarning, match="V1 'layers'"):
        mine = read_caffemodel(v1_path)
    assert sorted(mine) == sorted(weights)
    assert all(blob.shape == (1, 1, 1, 500) for blob in mine["ip1"][1:])  # legacy, as stored
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    from sparknet_ml.engine.scoring import load_weights
    load_weights(net, mine)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    for n in (ref, net):
        n.blobs["data"].data[...] = x
        n.forward()
    assert np.array_equal(net.blobs[deploy.output_blob].data, ref.blobs[deploy.output_blob].data)
    for name, blobs in ref.params.items():
        for got, want in zip(net.params[name], blobs):
            assert np.array_equal(got.data, want.data)
    out = str(tmp_path / "lenet.onnx")
    with pytest.warns(UpgradedFormatWarning):
        assert cli.main(["export", "--onnx", "--net", zoo_file("lenet_train_test_v1"),
                         "--weights", v1_path, "--input-shape", "1,28,28", "--out", out]) == 0
    ort = pytest.importorskip("onnxruntime")
    (got,) = ort.InferenceSession(out).run(None, {"data": x})
    want = ref.blobs[deploy.output_blob].data
    assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())
