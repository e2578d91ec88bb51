"""Nothing the package creates outlives a Caffe abort (hardening issue, item 15: every abort
left a /tmp/tmpXXXX.prototxt behind)."""
import os
import subprocess
import sys

import pytest

from .conftest import caffe  # noqa: F401  (skips without pycaffe)

ABORTING = {
    # a 3x3 input under a 5x5 kernel: Caffe's shape CHECK fails while building the solver
    "solver": """
from sparknet_ml.engine.solver import make_solver
make_solver('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } } '
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 1 kernel_size: 5 } }', "base_lr: 0.01", 1)
""",
    # the same shape error in a scoring net (the variant)
    "scoring": """
from sparknet_ml.engine.scoring import ScoreSpec, cached_net
net = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } } '
       'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
       'convolution_param { num_output: 1 kernel_size: 5 } }')
cached_net(ScoreSpec(net, 1, "data", ("c",)), "w", {})
""",
}


@pytest.mark.parametrize("what", sorted(ABORTING))
def test_a_caffe_abort_leaves_no_temporary_file(tmp_path, what):
    done = subprocess.run([sys.executable, "-c", ABORTING[what]], capture_output=True, text=True,
                          env=dict(os.environ, TMPDIR=str(tmp_path)), timeout=120)
    assert done.returncode == -6 and "Check failed" in done.stderr  # SIGABRT, Caffe's CHECK
    assert os.listdir(tmp_path) == []
