"""Build pycaffe solvers from prototxt text, with no files left behind."""
from __future__ import annotations

import tempfile

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

# SolverParameter fields that name files or make Caffe write them; a solver built here
# takes its net from text and never snapshots.
_FILE_FIELDS = ("net", "train_net", "test_net", "snapshot_prefix")


def net_with_batch(net_text: str, batch_size: int) -> caffe_pb2.NetParameter:
    """Parse a net prototxt and set the first (batch) dimension of every Input layer's shapes."""
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch_size
    return net


def set_device(gpu: int | None, tf32: bool = False) -> None:
    """Run Caffe (in this thread) on the CPU (``gpu=None``) or on GPU ``gpu``, there with
    TensorFloat-32 math when ``tf32``."""
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
        caffe.set_tf32(tf32)


def make_solver(net_text: str, solver_text: str, batch_size: int):
    """Return a pycaffe solver for a training net and solver given as prototxt text.

    Parameters
    ----------
    net_text : str
        NetParameter prototxt whose Input layers feed ``data``/``label``.
    solver_text : str
        SolverParameter prototxt; its net and snapshot paths are ignored.
    batch_size : int
        Batch dimension given to every Input layer.
    """
    param = text_format.Parse(solver_text, caffe_pb2.SolverParameter())
    for name in _FILE_FIELDS:
        param.ClearField(name)
    param.ClearField("test_iter")
    param.ClearField("test_interval")
    param.snapshot = 0
    param.net_param.CopyFrom(net_with_batch(net_text, batch_size))
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(text_format.MessageToString(param))
        f.flush()
        return caffe.get_solver(f.name)
