"""Build pycaffe solvers from prototxt text, with no files left behind."""
from __future__ import annotations

import contextlib
import os
import tempfile

import caffe
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from .transform import Transform

# SolverParameter fields that name files or make Caffe write them; a solver built here
# takes its net from text and never snapshots.
_FILE_FIELDS = ("net", "train_net", "test_net", "snapshot_prefix")


@contextlib.contextmanager
def prototxt_file(text: str):
    """A path from which Caffe reads ``text``, which nothing outlives, a Caffe abort (SIGABRT)
    included: the temporary file is unlinked as soon as it is written and read through
    ``/proc/self/fd`` (where there is no ``/proc``, it is removed on exit instead)."""
    fd, path = tempfile.mkstemp(suffix=".prototxt")
    try:
        with os.fdopen(os.dup(fd), "w") as f:
            f.write(text)
        if os.path.isdir("/proc/self/fd"):
            os.unlink(path)
            path = f"/proc/self/fd/{fd}"
        yield path
    finally:
        os.close(fd)
        if not path.startswith("/proc/") and os.path.exists(path):
            os.unlink(path)


def net_with_batch(net_text: str, batch_size: int) -> caffe_pb2.NetParameter:
    """Parse a net prototxt and set the first (batch) dimension of every Input layer's shapes."""
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch_size
    return net


# Blobs of a net whose training block lives inside it (see :func:`with_resident_block`).
BLOCK_TOP, LABEL_BLOCK_TOP, ROWS_TOP = "sparknet_block", "sparknet_label_block", "sparknet_rows"
MEAN_TOP, ROUND_TOP = "sparknet_mean", "sparknet_round"


def transform_param(transform: Transform, packed: bool = False
                    ) -> caffe_pb2.TransformationParameter:
    """The ``transform_param`` of the SparkNetTransform layer for ``transform`` (crop, scale,
    mean values; the mean image is a bottom of its own), reading a packed uint8 block when
    ``packed``."""
    param = caffe_pb2.TransformationParameter(scale=transform.scale,
                                              mean_value=transform.mean_values,
                                              packed_uint8=packed)
    if transform.crop is not None:
        param.crop_h, param.crop_w = transform.crop
    return param


def packed_shape(shape) -> tuple[int, ...]:
    """The block shape holding uint8 examples of ``shape`` (N, C, H, W) four to a float:
    (N, C, H, ceil(W / 4))."""
    return (*shape[:-1], -(-shape[-1] // 4))


def packable(transform: Transform, x: np.ndarray) -> bool:
    """Whether the SparkNetTransform layer can read the examples ``x`` packed: uint8, and
    their width known to it (a crop, a mean image, or rows that fill whole floats)."""
    return x.dtype == np.uint8 and (transform.crop is not None or transform.mean_image
                                    is not None or x.shape[-1] % 4 == 0)


def pack_pixels(x: np.ndarray, out: np.ndarray) -> None:
    """Write uint8 examples ``x`` (n, C, H, W) into the float32 blob ``out`` of
    :func:`packed_shape`, as the SparkNetTransform layer reads a packed block."""
    out.view(np.uint8)[..., :x.shape[-1]] = x


def _add_transform(out: caffe_pb2.NetParameter, data_top: str, shape, draws: str,
                   transform: Transform, packed: bool) -> None:
    """Append the Input block (and mean) and the SparkNetTransform layer that makes
    ``data_top`` (``shape``: batch, C, crop h, crop w) from them and the ``draws`` blob."""
    block = packed_shape(shape) if packed else shape
    out.layer.add(name=BLOCK_TOP, type="Input", top=[BLOCK_TOP]).input_param.shape.add(
    ).dim.extend(block)
    bottoms = [BLOCK_TOP, draws]
    if transform.mean_image is not None:
        mean = out.layer.add(name=MEAN_TOP, type="Input", top=[MEAN_TOP])
        mean.input_param.shape.add().dim.extend([1, *shape[1:]])
        bottoms.append(MEAN_TOP)
    out.layer.add(name="sparknet_transform", type="SparkNetTransform", bottom=bottoms,
                  top=[data_top], transform_param=transform_param(transform, packed))


def _split_inputs(net: caffe_pb2.NetParameter, tops) -> tuple[list, dict]:
    """The net's layers with ``tops`` taken out of its Input layers, and those tops' shapes."""
    kept, shapes = [], {}
    for layer in net.layer:
        if layer.type == "Input" and set(tops) & set(layer.top):
            rest = caffe_pb2.LayerParameter()
            rest.CopyFrom(layer)
            del rest.top[:]
            rest.input_param.ClearField("shape")
            for i, top in enumerate(layer.top):
                shape = layer.input_param.shape[i if len(layer.input_param.shape) > 1 else 0]
                if top in tops:
                    shapes[top] = shape
                else:
                    rest.top.append(top)
                    rest.input_param.shape.add().CopyFrom(shape)
            layer = rest if rest.top else None
        if layer is not None:
            kept.append(layer)
    return kept, shapes


def _check_names(net: caffe_pb2.NetParameter) -> None:
    taken = {top for layer in net.layer for top in layer.top} & {
        BLOCK_TOP, LABEL_BLOCK_TOP, ROWS_TOP, MEAN_TOP, ROUND_TOP, ROWS_TOP + "_flat",
        ROWS_TOP + "_row", ROWS_TOP + "_crop"}
    if taken:
        raise ValueError(f"the net already has blobs {sorted(taken)}")


def with_device_transform(net: caffe_pb2.NetParameter, data_top: str, transform: Transform,
                          packed: bool = False) -> caffe_pb2.NetParameter:
    """A deploy net whose ``data_top`` is made by the SparkNetTransform layer from a batch of
    stored examples (Input ``sparknet_block``, uint8 four to a float when ``packed``) and
    per-row draws (Input ``sparknet_rows``: row, offset h, offset w, mirror), so scoring
    uploads stored examples and transforms them on the device."""
    _check_names(net)
    kept, shapes = _split_inputs(net, [data_top])
    if data_top not in shapes:
        raise ValueError(f"the net has no Input layer with top {data_top!r}")
    shape = list(shapes[data_top].dim)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.layer.add(name=ROWS_TOP, type="Input", top=[ROWS_TOP]).input_param.shape.add(
    ).dim.extend([shape[0], 1, 1, 4])
    _add_transform(out, data_top, shape, ROWS_TOP, transform, packed)
    out.layer.extend(kept)
    return out


def with_resident_block(net: caffe_pb2.NetParameter, data_top: str, label_top: str | None,
                        transform: Transform | None = None,
                        packed: bool = False) -> caffe_pb2.NetParameter:
    """The net with its Input tops ``data_top`` (and ``label_top``) gathered from whole blocks.

    The blocks are Input blobs ``sparknet_block`` (and ``sparknet_label_block``), reshaped
    to a partition's rows and filled once. The round's rows (the Input blob
    ``sparknet_round``, written once per round) are handed out batch by batch by the
    SparkNetRows layer (sparknet_ml's patch to Caffe; its cursor lives on the device), and
    BatchReindex layers gather those rows into the original tops, so the solver's iterations
    need no host-side work: on a GPU the block stays on the device and an iteration can be
    replayed as a CUDA graph.

    With a ``transform`` that draws crops or flips, the block holds the stored examples as
    they are (uint8 four to a float when ``packed``), the rows are draws (row, crop offset
    h, crop offset w, mirror), and the SparkNetTransform layer (sparknet_ml's patch to Caffe)
    crops, mirrors, subtracts the mean (the Input blob ``sparknet_mean`` when the transform
    has a mean image) and scales on the device, as
    :meth:`~sparknet_ml.engine.transform.Transform.apply` does on the host.

    Raises
    ------
    ValueError
        When the net already uses one of these blob names or has no Input top ``data_top``.
    """
    draws = transform is not None and transform.random
    _check_names(net)
    kept, shapes = _split_inputs(net, [t for t in (data_top, label_top) if t])
    if data_top not in shapes:
        raise ValueError(f"the net has no Input layer with top {data_top!r}")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    batch = shapes[data_top].dim[0]
    out.layer.add(name=ROUND_TOP, type="Input", top=[ROUND_TOP]).input_param.shape.add(
    ).dim.extend([batch, 1, 1, 4 if draws else 1])
    rows = out.layer.add(name=ROWS_TOP, type="SparkNetRows", bottom=[ROUND_TOP],
                         top=[ROWS_TOP])
    rows.memory_data_param.batch_size = batch
    row_blob = ROWS_TOP
    if draws:  # the row column of the draws gathers the labels
        row_blob = ROWS_TOP + "_row"
        split = out.layer.add(name="sparknet_rows_split", type="Slice", bottom=[ROWS_TOP],
                              top=[row_blob, ROWS_TOP + "_crop"])
        split.slice_param.axis = 3
        split.slice_param.slice_point.append(1)
        out.layer.add(name="sparknet_crop_silence", type="Silence",
                      bottom=[ROWS_TOP + "_crop"])
    flat = out.layer.add(name="sparknet_rows_flat", type="Reshape", bottom=[row_blob],
                         top=[ROWS_TOP + "_flat"])  # BatchReindex takes 1-D indices
    flat.reshape_param.shape.dim.append(-1)
    if draws:
        _add_transform(out, data_top, list(shapes[data_top].dim), ROWS_TOP, transform, packed)
    else:
        out.layer.add(name=BLOCK_TOP, type="Input", top=[BLOCK_TOP]).input_param.shape.add(
        ).CopyFrom(shapes[data_top])
        out.layer.add(name=f"sparknet_gather_{data_top}", type="BatchReindex",
                      bottom=[BLOCK_TOP, ROWS_TOP + "_flat"], top=[data_top])
    if label_top:
        out.layer.add(name=LABEL_BLOCK_TOP, type="Input",
                      top=[LABEL_BLOCK_TOP]).input_param.shape.add().CopyFrom(shapes[label_top])
        out.layer.add(name=f"sparknet_gather_{label_top}", type="BatchReindex",
                      bottom=[LABEL_BLOCK_TOP, ROWS_TOP + "_flat"], top=[label_top])
    out.layer.extend(kept)
    return out


def set_device(gpu: int | None, tf32: bool = False) -> None:
    """Run Caffe (in this thread) on the CPU (``gpu=None``) or on GPU ``gpu``, there with
    TensorFloat-32 math when ``tf32``."""
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
        caffe.set_tf32(tf32)


MEAN_LOSS_WINDOW = 2 ** 31 - 1
"""The solver's ``average_loss``: Caffe's ``smoothed_loss`` after ``step(n)`` is then the mean
of those n iterations' losses."""


def make_solver(net_text: str, solver_text: str, batch_size: int,
                resident: tuple[str, str | None, Transform | None, bool] | None = None):
    """Return a pycaffe solver for a training net and solver given as prototxt text.

    Parameters
    ----------
    net_text : str
        NetParameter prototxt whose Input layers feed ``data``/``label``.
    solver_text : str
        SolverParameter prototxt; its net and snapshot paths and its test settings
        (``test_iter``, ``test_interval``, ``test_state``: sparknet_ml validates on its own)
        are ignored.
    batch_size : int
        Batch dimension given to every Input layer.
    resident : (data top, label top or None, transform or None, packed), optional
        Build the net :func:`with_resident_block` for these tops and transform.
    """
    param = text_format.Parse(solver_text, caffe_pb2.SolverParameter())
    for name in _FILE_FIELDS:
        param.ClearField(name)
    for name in ("test_iter", "test_interval", "test_state"):
        param.ClearField(name)
    param.snapshot = 0
    param.average_loss = MEAN_LOSS_WINDOW
    net = net_with_batch(net_text, batch_size)
    param.net_param.CopyFrom(net if resident is None else with_resident_block(net, *resident))
    with prototxt_file(text_format.MessageToString(param)) as path:
        return caffe.get_solver(path)
