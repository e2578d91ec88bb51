"""sparknet_ml's SparkNetRows layer (a patch to Caffe) hands out a round's rows batch by batch,
as MemoryData did: in order, the first batch again after the last, from the first batch when the
rows change shape; on the CPU and, on a CUDA build, on the GPU (there its cursor lives on the
device)."""
import numpy as np
import pytest

from sparknet_ml.engine.solver import set_device

from .conftest import caffe, caffe_devices

NET = """
name: "rows"
layer { name: "round" type: "Input" top: "round" input_param { shape { dim: 6 dim: 1 dim: 1 dim: 4 } } }
layer { name: "rows" type: "SparkNetRows" bottom: "round" top: "rows"
  memory_data_param { batch_size: 3 } }
"""


@pytest.mark.parametrize("device", caffe_devices())
def test_the_rows_come_batch_by_batch_and_start_over_with_a_new_shape(tmp_path, device):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    set_device(device)
    try:
        net = caffe.Net(str(path), caffe.TEST)
        rows = np.arange(24, dtype=np.float32).reshape(6, 1, 1, 4)
        net.blobs["round"].data[...] = rows
        seen = [net.forward()["rows"].copy() for _ in range(3)]
        np.testing.assert_array_equal(seen[0], rows[:3])
        np.testing.assert_array_equal(seen[1], rows[3:])
        np.testing.assert_array_equal(seen[2], rows[:3])  # after the last batch, the first
        longer = -np.arange(36, dtype=np.float32).reshape(9, 1, 1, 4)
        net.blobs["round"].reshape(*longer.shape)
        net.blobs["round"].data[...] = longer
        np.testing.assert_array_equal(net.forward()["rows"], longer[:3])  # from the first
        np.testing.assert_array_equal(net.forward()["rows"], longer[3:6])
        assert net.blobs["rows"].data.shape == (3, 1, 1, 4)
    finally:
        caffe.set_mode_cpu()
