"""Max pooling over NaN (diverged training) must not write outside its blobs: Caffe's CPU
backward added to bottom_diff[-1] (patch max-pooling-nan-backward). Run in a child with glibc's
heap checks on, so a corrupted heap aborts at the net's release instead of much later."""
import os
import subprocess
import sys

from .conftest import caffe  # noqa: F401  (skips without pycaffe)

CHILD = """
import numpy as np
import caffe
from sparknet_ml.engine.solver import prototxt_file
caffe.set_mode_cpu()
text = ('force_backward: true '
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 4 dim: 6 dim: 6 } } } '
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }')
for _ in range(20):
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TRAIN)
    net.blobs["data"].data[...] = np.nan
    net.forward()
    net.blobs["pool"].diff[...] = 1.0
    net.backward()
    assert not np.isnan(net.blobs["data"].diff).any()
    del net
print("released")
"""


def test_max_pooling_backward_over_nan_leaves_the_heap_intact():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MALLOC_CHECK_": "3",
                                            "GLOG_minloglevel": "2"})
    assert done.returncode == 0 and "released" in done.stdout, done.stderr[-2000:]
