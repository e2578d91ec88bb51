"""sparknet_ml's SparkNetTransform layer (a patch to Caffe) gives the numpy transform's
numbers exactly, on the CPU and, on a CUDA build, on the GPU."""
import numpy as np
import pytest

from sparknet_ml.engine.solver import (BLOCK_TOP, MEAN_TOP, ROWS_TOP, pack_pixels, packed_shape,
                                      set_device, transform_param)
from sparknet_ml.engine.transform import Transform

from .conftest import caffe, caffe_devices


def transform_net(transform, block_shape, batch, packed):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    inputs = [(BLOCK_TOP, packed_shape(block_shape) if packed else block_shape),
              (ROWS_TOP, (batch, 1, 1, 4))]
    if transform.mean_image is not None:
        inputs.append((MEAN_TOP, (1, *block_shape[1:])))
    for name, shape in inputs:
        net.layer.add(name=name, type="Input", top=[name]).input_param.shape.add().dim.extend(shape)
    net.layer.add(name="transform", type="SparkNetTransform", bottom=[n for n, _ in inputs],
                  top=["data"], transform_param=transform_param(transform, packed))
    return text_format.MessageToString(net)


@pytest.mark.parametrize("device", caffe_devices())
@pytest.mark.parametrize("mean", ["image", "values", "one value", None])
@pytest.mark.parametrize("packed", [False, True], ids=["float", "uint8"])
def test_sparknet_transform_layer_equals_the_numpy_transform(tmp_path, device, mean, packed):
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (40, 3, 256, 254)).astype(np.uint8)  # 254: rows padded
    mean_image = rng.uniform(0, 255, (3, 256, 254)).astype(np.float32) if mean == "image" else None
    values = {"values": (104.0, 117.0, 123.0), "one value": (110.0,)}.get(mean, ())
    transform = Transform(0.017, values, mean_image, crop=(227, 227), mirror=True)
    rows = rng.integers(0, 40, 16)
    offsets, flips = transform.draw(rng, 16, block.shape[1:])
    path = tmp_path / "net.prototxt"
    path.write_text(transform_net(transform, block.shape, 16, packed))
    set_device(device)
    net = caffe.Net(str(path), caffe.TEST)
    if packed:
        pack_pixels(block, net.blobs[BLOCK_TOP].data)
    else:
        net.blobs[BLOCK_TOP].data[...] = block
    net.blobs[ROWS_TOP].data[...] = np.column_stack([rows, offsets, flips]).reshape(16, 1, 1, 4)
    if mean_image is not None:
        net.blobs[MEAN_TOP].data[...] = mean_image
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data,
                                  transform.apply(block, rows, offsets, flips))
    caffe.set_mode_cpu()
